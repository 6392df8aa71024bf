"""Telling a workspace's team what happened, by a Slack-compatible webhook and by e-mail.

One module per job, in the order a message lives: `deliveries` decides which audit entries
become messages and to which places, writes them with the entry and sends each one from
the worker with bounded retries; `messages` renders what a message says from the templates
in templates/notifications/; `webhook` and `email` are the two channels, each with its
own way of sending and of saying what went wrong. A delivery never changes the attempt it
tells about.
"""
