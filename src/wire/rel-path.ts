// Workspace-relative paths as they travel on the wire: '/'-separated, no
// leading slash, "" for the root. Both the node and the mount build them.

export function parentOf(rel: string): string {
  const i = rel.lastIndexOf('/');
  return i < 0 ? '' : rel.slice(0, i);
}

export function baseName(rel: string): string {
  return rel.slice(rel.lastIndexOf('/') + 1);
}

/** The longest name (bytes) Linux filesystems keep to. */
export const NAME_MAX = 255;

export function joinRel(dir: string, name: string): string {
  return dir === '' ? name : `${dir}/${name}`;
}

/** Whether `rel` is `dir` or lies below it ("" is the root: everything does). */
export function isWithin(rel: string, dir: string): boolean {
  return dir === '' || rel === dir || rel.startsWith(dir + '/');
}
