// Whose a file shown through the mount is.
//
// A node makes files as the user it runs as, and the kernel checks each
// access to the mount (default_permissions) against the user who runs the
// program here. A mount run by someone else than the node's user (a
// developer's account; a node run by root or a service user) would show the
// whole workspace as another user's: nothing writable, no 0600 file
// readable. With idmap "user" the node's user and group are shown as the
// mount's, and the other way round: a swap, so any other owner stays as it
// is and no two owners on the node look like one here (a node-side file of
// the mount's own uid shows as the node's user's).
//
// The VFS, the metadata cache, the journal and the wire all speak the node's
// ids; the drivers translate where they meet the kernel: attributes going
// out, and the caller's ids and chown's ids coming in.
import { isId, type Attr } from '../content/attr.js';

export interface Ids {
  uid: number;
  gid: number;
}

export const ID_MAPS = ['user', 'none'] as const;
/** `user`: the node's user shown as the mount's; `none`: ids shown as the node has them. */
export type IdMap = (typeof ID_MAPS)[number];

export class OwnerMap {
  /** Ids shown as they are. */
  static readonly none = new OwnerMap(undefined, processIds());

  private constructor(
    /** The mount process's ids, and what they are on the node. */
    private readonly swap: { local: Ids; node: Ids } | undefined,
    /** The mount process's ids as the node has them: whose what it makes is when no caller says (fuse-native; entries shown before a node answers). */
    readonly maker: Ids,
  ) {}

  /**
   * The map for `mode` between this process's ids (`local`) and the node's
   * (valid ids, or unknown from a node that does not say: ids are then
   * shown as they are).
   */
  static of(mode: IdMap, local: Ids, node: Ids | undefined): OwnerMap {
    if (mode === 'none' || !node || (node.uid === local.uid && node.gid === local.gid)) return new OwnerMap(undefined, local);
    return new OwnerMap({ local, node }, node);
  }

  /** The two owners swapped (none when ids show as they are): for status. */
  get swapped(): { local: Ids; node: Ids } | undefined {
    return this.swap;
  }

  /** A uid as the kernel is shown it, from the node's; a swap, so also the node's from the kernel's. */
  uid(id: number): number {
    const s = this.swap;
    return !s ? id : id === s.node.uid ? s.local.uid : id === s.local.uid ? s.node.uid : id;
  }

  gid(id: number): number {
    const s = this.swap;
    return !s ? id : id === s.node.gid ? s.local.gid : id === s.local.gid ? s.node.gid : id;
  }

  /** Attributes as shown to the kernel (the same object when nothing changes). */
  shown(a: Attr): Attr {
    const uid = this.uid(a.uid);
    const gid = this.gid(a.gid);
    return uid === a.uid && gid === a.gid ? a : { ...a, uid, gid };
  }
}

/** The default: the node's user shown as the mount's, unless the mount runs as root (which may open anything, and restores owners as they are: `tar -x`, `cp -a`). */
export function defaultIdMap(): IdMap {
  return process.geteuid?.() === 0 ? 'none' : 'user';
}

/** Ids a node sent, if both are ids (not -1, "unknown", nor out of range). */
export function validIds(o: { uid: number | string; gid: number | string } | null | undefined): Ids | undefined {
  if (!o) return undefined;
  const uid = Number(o.uid);
  const gid = Number(o.gid);
  return isId(uid) && isId(gid) ? { uid, gid } : undefined;
}

/** This process's ids. */
export function processIds(): Ids {
  return { uid: process.geteuid?.() ?? 0, gid: process.getegid?.() ?? 0 };
}
