// Metadata entries as they arrive on the wire, in the mount's form.
import { isLnk, isReg } from '../content/attr.js';
import { fileDigest } from '../content/manifest.js';
import type { MetaEntry } from '../cache/meta-store.js';
import { attrFromWire, chunksFromWire } from '../wire/convert.js';
import type { WEntryOut } from '../wire/types.js';

export function entryFromWire(e: WEntryOut): MetaEntry {
  const attr = attrFromWire(e.attr!);
  if (isReg(attr.mode)) {
    if (!e.digest?.length) return { attr };
    const digest = Buffer.from(e.digest);
    // A small file's chunk list comes with its entry; keep it only if it is the one the digest names.
    const chunks = e.chunks?.length || attr.size === 0 ? chunksFromWire(e.chunks ?? []) : undefined;
    return chunks && fileDigest(chunks).equals(digest) ? { attr, digest, chunks } : { attr, digest };
  }
  if (isLnk(attr.mode)) return { attr, target: e.symlinkTarget };
  return { attr };
}
