// The project's root folder (the one holding proto/ and native/), found from
// this file whether it runs from src/ or from dist/src/.
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

export function projectRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    if (existsSync(join(dir, 'proto', 'ghostfs', 'v1', 'ghostfs.proto'))) return dir;
    const up = dirname(dir);
    if (up === dir) throw new Error('cannot find proto/ghostfs/v1/ghostfs.proto above ' + fileURLToPath(import.meta.url));
    dir = up;
  }
}
