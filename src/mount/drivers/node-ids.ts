// The kernel's node ids for the native driver. The kernel identifies every
// file it knows by a node id, which must not be given to another file while
// the kernel still holds it. The node's inode numbers cannot serve: its
// filesystem reuses a number as soon as a file is deleted, while the kernel
// here may still hold the old one (an rmdir followed by a mkdir elsewhere
// got the same number, and the kernel saw one directory in two places).
// So ids are handed out here, one per name, and live until the kernel
// forgets them: a tree of (parent id, name) with lookup counts, like
// libfuse's own high-level layer. stat still shows the node's inode numbers.
import { FsError } from '../../wire/errors.js';
import { joinRel } from '../../wire/rel-path.js';

export const ROOT_ID = 1;

interface KNode {
  parent: number;
  name: string;
  /** References the kernel holds (each entry reply adds one; forget drops). */
  lookups: number;
  /** Unlinked or replaced: the id lives on for open files, the name is gone. */
  detached: boolean;
}

export class NodeIds {
  private readonly nodes = new Map<number, KNode>([[ROOT_ID, { parent: 0, name: '', lookups: 1, detached: false }]]);
  private readonly byName = new Map<string, number>();
  private next = ROOT_ID + 1;

  private static key(parent: number, name: string): string {
    return `${parent}/${name}`;
  }

  get size(): number {
    return this.nodes.size;
  }

  /** Whether the kernel still holds this id. */
  has(id: number): boolean {
    return this.nodes.has(id);
  }

  /** Whether the id, and every directory above it, still has its name. */
  linked(id: number): boolean {
    for (let cur = id; cur !== ROOT_ID; ) {
      const n = this.nodes.get(cur);
      if (!n || n.detached) return false;
      cur = n.parent;
    }
    return true;
  }

  /** The path of an id, relative to the workspace root. */
  path(id: number): string {
    const parts: string[] = [];
    for (let cur = id; cur !== ROOT_ID; ) {
      const n = this.nodes.get(cur);
      if (!n || n.detached) throw new FsError(n ? 'ENOENT' : 'ESTALE', `node id ${id} ${n ? 'was removed' : 'is not known'}`);
      parts.push(n.name);
      cur = n.parent;
    }
    return parts.reverse().join('/');
  }

  /** The path of a name in a directory. */
  child(parent: number, name: string): string {
    return joinRel(this.path(parent), name);
  }

  /** The id for a name the kernel is told about now (lookup, create, readdirplus): one more reference. */
  entry(parent: number, name: string): number {
    const k = NodeIds.key(parent, name);
    let id = this.byName.get(k);
    if (id === undefined) {
      id = this.next++;
      this.nodes.set(id, { parent, name, lookups: 0, detached: false });
      this.byName.set(k, id);
    }
    this.nodes.get(id)!.lookups++;
    return id;
  }

  /** An id for a name without a reference yet (readdirplus: only entries that fit in the reply get one). */
  reserve(parent: number, name: string): number {
    const id = this.entry(parent, name);
    this.nodes.get(id)!.lookups--;
    return id;
  }

  ref(id: number): void {
    const n = this.nodes.get(id);
    if (n) n.lookups++;
  }

  /** The id of a name if the kernel has one, without a new reference (invalidation). */
  find(parent: number, name: string): number | undefined {
    return this.byName.get(NodeIds.key(parent, name));
  }

  /** The id of a path, walking names from the root; undefined where the kernel knows none. */
  lookupPath(path: string): number | undefined {
    let id: number | undefined = ROOT_ID;
    if (path === '') return id;
    for (const name of path.split('/')) {
      id = this.find(id, name);
      if (id === undefined) return undefined;
    }
    return id;
  }

  forget(id: number, count: number): void {
    const n = this.nodes.get(id);
    if (!n || id === ROOT_ID) return;
    n.lookups -= count;
    if (n.lookups > 0) return;
    this.nodes.delete(id);
    const k = NodeIds.key(n.parent, n.name);
    if (this.byName.get(k) === id) this.byName.delete(k);
  }

  /** The name is gone (unlink, rmdir, or replaced by a rename). */
  removed(parent: number, name: string): void {
    const k = NodeIds.key(parent, name);
    const id = this.byName.get(k);
    if (id === undefined) return;
    this.byName.delete(k);
    this.nodes.get(id)!.detached = true;
  }

  /** A rename: the id moves with its name, and what was under it follows. */
  renamed(parent: number, name: string, newParent: number, newName: string, exchange: boolean): void {
    const from = NodeIds.key(parent, name);
    const to = NodeIds.key(newParent, newName);
    const a = this.byName.get(from);
    const b = this.byName.get(to);
    this.byName.delete(from);
    this.byName.delete(to);
    if (exchange && b !== undefined) {
      Object.assign(this.nodes.get(b)!, { parent, name });
      this.byName.set(from, b);
    } else if (b !== undefined) {
      this.nodes.get(b)!.detached = true;
    }
    if (a !== undefined) {
      Object.assign(this.nodes.get(a)!, { parent: newParent, name: newName });
      this.byName.set(to, a);
    }
  }
}
