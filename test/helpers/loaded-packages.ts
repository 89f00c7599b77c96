// Given to a ghostfs command with `node --import`: as the process exits, it
// writes to stderr the npm packages loaded through require (every heavy one
// ghostfs uses is a CommonJS package), one line: "loaded packages: a b c".
import { createRequire } from 'node:module';

const cache = createRequire(import.meta.url).cache;
process.on('exit', () => {
  const names = new Set(Object.keys(cache).map((file) => /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(file)?.[1]));
  names.delete(undefined);
  process.stderr.write(`loaded packages: ${[...names].join(' ')}\n`);
});
