// What a change of names (a MutateRequest) makes or removes: the node
// answers with those names' directories, and a client that lost the answer
// asks for them again.
import type { WMutateRequest } from './types.js';

type Changes = Pick<WMutateRequest, 'mkdir' | 'rmdir' | 'unlink' | 'symlink' | 'mknod' | 'link' | 'rename'>;

/** The names a request makes or removes (a link's new one, both of a rename's): their directories change with them. */
export function namesChanged(req: Changes): string[] {
  return [req.mkdir?.path, req.rmdir?.path, req.unlink?.path, req.symlink?.path, req.mknod?.path, req.link?.path, req.rename?.from, req.rename?.to].filter((p): p is string => !!p);
}
