// A ghostfs mount left behind by a process that is gone, or that cannot go:
// a process killed while one of its threads waits in the kernel (a
// notify_inval_entry waiting for a directory lock held by a request only
// the dead process would answer) stays a zombie that keeps its FUSE
// connection open. Requests on that mount then wait forever, a stat of the
// mountpoint included, and unmounting lazily does not end them. Aborting
// the connection does: every waiting request fails, the zombie finishes
// exiting, and the mountpoint answers ENOTCONN, which the drivers detach.
// A mount that does not answer its control socket counts as left behind.
import { log } from '../log.js';
import { abortFuseConnection, fuseConnection, mountEntry } from '../mount/mount-table.js';
import { mountAnswers } from './control-client.js';
import { socketFor } from './registry.js';

/**
 * Before mounting at `mountpoint`: aborts the connection of a ghostfs mount
 * that no running ghostfs serves any more. Throws if a running one does.
 * Looks only at the mount table: the mountpoint itself may hang.
 */
export async function abortStaleMount(mountpoint: string): Promise<void> {
  const e = await mountEntry(mountpoint);
  if (!e || !(e.fstype === 'fuse.ghostfs' || e.source === 'ghostfs')) return;
  if (await mountAnswers(socketFor(mountpoint))) throw new Error(`${mountpoint} is already mounted by a running ghostfs: unmount it first (ghostfs unmount ${mountpoint})`);
  const connection = fuseConnection(e);
  try {
    await abortFuseConnection(connection);
    log.warn({ mountpoint, connection }, 'a ghostfs mount whose process is gone was left here: aborted its FUSE connection');
  } catch (err) {
    log.warn({ mountpoint, err: (err as Error).message }, 'cannot abort the FUSE connection of the mount left here; its requests may keep waiting');
  }
}
