// The sign-in check: after many failed sign-ins from one address, the password form from
// that address carries a small puzzle (experiments/signin/challenge.py). This finds a
// counter whose SHA-256 with the form's seed starts with the asked number of zero bits,
// in slices so the page stays responsive, and holds the form's submission until it has.
"use strict";

const K = new Uint32Array([
  0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
  0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
  0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
  0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
  0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
  0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
  0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
  0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
]);
const W = new Uint32Array(64);
const ror = (x, n) => (x >>> n) | (x << (32 - n));

// The first 32 bits of SHA-256(text), for ASCII text of at most 55 characters (one block).
function firstWord(text) {
  W.fill(0, 0, 16);
  for (let i = 0; i < text.length; i++) W[i >> 2] |= text.charCodeAt(i) << (24 - (i & 3) * 8);
  W[text.length >> 2] |= 0x80 << (24 - (text.length & 3) * 8);
  W[15] = text.length * 8;
  for (let i = 16; i < 64; i++) {
    const s0 = ror(W[i - 15], 7) ^ ror(W[i - 15], 18) ^ (W[i - 15] >>> 3);
    const s1 = ror(W[i - 2], 17) ^ ror(W[i - 2], 19) ^ (W[i - 2] >>> 10);
    W[i] = (W[i - 16] + s0 + W[i - 7] + s1) | 0;
  }
  let a = 0x6a09e667, b = 0xbb67ae85, c = 0x3c6ef372, d = 0xa54ff53a;
  let e = 0x510e527f, f = 0x9b05688c, g = 0x1f83d9ab, h = 0x5be0cd19;
  for (let i = 0; i < 64; i++) {
    const t1 = (h + (ror(e, 6) ^ ror(e, 11) ^ ror(e, 25)) + ((e & f) ^ (~e & g)) + K[i] + W[i]) | 0;
    const t2 = ((ror(a, 2) ^ ror(a, 13) ^ ror(a, 22)) + ((a & b) ^ (a & c) ^ (b & c))) | 0;
    h = g; g = f; f = e; e = (d + t1) | 0; d = c; c = b; b = a; a = (t1 + t2) | 0;
  }
  return (a + 0x6a09e667) >>> 0;
}

function solve(seed, bits, done) {
  let counter = 0;
  function slice() {
    const until = performance.now() + 40;
    while (performance.now() < until) {
      for (let i = 0; i < 1000; i++, counter++) {
        if (Math.clz32(firstWord(seed + ":" + counter)) >= bits) return done(String(counter));
      }
    }
    setTimeout(slice, 0);
  }
  slice();
}

const form = document.querySelector("form[data-challenge-seed]");
if (form) {
  const answer = form.querySelector("input[name=challenge_answer]");
  const status = document.getElementById("challenge-status");
  let solved = false;
  let waiting = false;
  form.addEventListener("submit", (event) => {
    if (solved) return;
    event.preventDefault();
    waiting = true;
    if (status) status.textContent = "Finishing the check, one moment…";
  });
  solve(form.dataset.challengeSeed, Number(form.dataset.challengeBits), (value) => {
    answer.value = value;
    solved = true;
    if (status) status.textContent = "Check done.";
    if (waiting) form.requestSubmit();
  });
}
