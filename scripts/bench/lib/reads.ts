// Read workloads on the big file shared by the benchmarks (read, peers):
// each a child process in the directory holding big.bin, checked so that a
// short or failed read can never pass for a fast one.
import { MB } from './report.js';
import { failed, runCmd } from './session.js';

/** Sequential read of big.bin with dd bs=1M: MB/s. */
export async function ddRead(root: string, size: number): Promise<number> {
  const r = await runCmd('dd if=big.bin of=/dev/null bs=1M', root, { timeoutMs: 60 * 60_000 });
  if (r.code !== 0) throw failed('dd', r);
  // dd's own count, so a short read through a mount cannot pass for a fast one.
  const bytes = Number(/^(\d+) bytes/m.exec(r.stderr)?.[1] ?? NaN);
  if (bytes !== size) throw new Error(`dd read ${bytes} bytes of ${size}`);
  return bytes / (r.ms / 1000) / MB;
}

/** Random 4K reads of big.bin, one thread, for `runtimeS` seconds: IOPS. */
export async function fioRandRead(root: string, size: number, runtimeS: number): Promise<number> {
  // --readonly: fio must never write to the file it benchmarks; direct=0: FUSE mounts here have no O_DIRECT.
  const cmd = `fio --name=r --filename=big.bin --rw=randread --bs=4k --size=${size} --runtime=${runtimeS} --time_based --ioengine=psync --direct=0 --readonly --output-format=json`;
  const r = await runCmd(cmd, root, { capture: true, timeoutMs: (runtimeS + 300) * 1000 });
  if (r.code !== 0) throw failed('fio', r);
  const json = JSON.parse(r.stdout.slice(r.stdout.indexOf('{'))) as { jobs: { error: number; read: { iops: number; io_bytes: number } }[] };
  const job = json.jobs[0]!;
  if (job.error || !job.read.io_bytes) throw new Error(`fio reported error ${job.error}, ${job.read.io_bytes} bytes read`);
  return job.read.iops;
}
