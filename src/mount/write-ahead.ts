// A big file written front to back starts travelling before it is closed:
// its chunks are cut and hashed as the writes arrive (StreamChunker) and,
// while the writer keeps writing, the node is asked which of them it lacks
// and gets those, sent from the dirty copy once their writes landed there
// (by the kernel, over the bulk lane: see FileRange). At close the chunk
// list is ready and the upload only sends what the node still lacks (the
// usual has-chunks query decides), so nothing here has to succeed: a chunk
// that was not sent (the node did not answer, the file stopped being a
// straight run) travels at close, and a staged chunk no commit used
// expires on the node. The commit still happens at close.
// The node puts the chunks in the file's draft, where they stay: the commit
// takes the draft as the new file and writes only what is not there yet.
import { randomBytes } from 'node:crypto';
import { open } from 'node:fs/promises';
import { StreamChunker } from '../content/stream-chunker.js';
import type { ChunkingParams } from '../content/chunker.js';
import type { ChunkRef, Manifest } from '../content/manifest.js';
import { rangesIn, type FileRange } from '../mesh/connection.js';
import { log } from '../log.js';

/** Chunks ending below this offset are left for the close: a small file gains nothing from travelling early. */
export const WRITE_AHEAD_FROM = 8 * 1024 * 1024;
/** Chunks per has-chunks question (and at most per PutChunks call). */
const BATCH = 8;
/**
 * Batches on their way at once: the next batch's question and upload overlap
 * the node's writing of the one before. One at a time, a 256 MiB write still
 * had 0.42 s of sending left at its close; with three, 3-5 % more MB/s.
 */
const IN_FLIGHT = 3;

/** Where chunks go on the node: the draft of the file at `path` (node/drafts.ts). */
export interface DraftOf {
  draft: string;
  path: string;
}

/** Sends what the node lacks of these chunks, their bytes where `bodyOf` says, into the file's draft. */
export type SendChunks = (chunks: ChunkRef[], bodyOf: (c: ChunkRef) => FileRange, to: DraftOf) => Promise<unknown>;

export class WriteAhead {
  /**
   * Names the file's draft on the node, which the chunks go into at their
   * offsets and the commit then takes as the new file (node/drafts.ts).
   */
  readonly draft = randomBytes(12).toString('base64url');
  private readonly chunker: StreamChunker;
  private queue: ChunkRef[] = [];
  private sending: Promise<void> | undefined;
  /** No more sending: the node failed a call, or the file stopped being a straight run. */
  private halted = false;
  /** Writes fed but not yet in the dirty copy; when none are, every byte fed is readable there. */
  private writing = 0;
  private readable = 0;
  private wake: (() => void) | undefined;

  constructor(
    params: ChunkingParams,
    private readonly send: SendChunks,
    /** The dirty copy's path (see finish). */
    private file: () => string,
    /** The file's path now (it may be renamed while written). */
    private readonly path: () => string,
  ) {
    this.chunker = new StreamChunker(params, (ref) => {
      if (this.halted || ref.offset + ref.length < WRITE_AHEAD_FROM) return;
      this.queue.push(ref);
      this.kick();
      this.wake?.();
    });
  }

  /** A write is about to go to the dirty copy (called in the order writes are made); `owned`: see StreamChunker.feed. */
  writeStarts(offset: number, data: Buffer, owned = false): void {
    this.writing++;
    this.chunker.feed(offset, data, owned);
    if (!this.chunker.active) this.halt();
  }

  /** That write is in the dirty copy (or failed: then stop() follows). */
  writeLanded(): void {
    if (--this.writing > 0) return;
    this.readable = this.chunker.fed;
    this.wake?.();
  }

  truncated(size: number): void {
    this.chunker.truncated(size);
    if (!this.chunker.active) this.halt();
  }

  /** The write failed or the file is gone: whatever was fed no longer describes it. */
  stop(): void {
    this.chunker.stop();
    this.halt();
  }

  /**
   * At close: the manifest of the `size`-byte file, if every byte of it went
   * through here, a promise that settles once the chunks still queued were
   * sent (or given up on; it never rejects), and the draft they went to
   * (what it holds is used even when the run broke off). The chunks still
   * queued are sent from `file` from then on: the copy as closed, whatever
   * name the file's next dirty copy gets.
   */
  finish(size: number, file: string): { manifest?: Manifest; sent: Promise<void>; draft: string } {
    this.file = () => file;
    const manifest = this.chunker.finish(size);
    if (!manifest) this.halt();
    return { manifest, sent: this.idle(), draft: this.draft };
  }

  private async idle(): Promise<void> {
    while (this.sending) await this.sending;
  }

  private halt(): void {
    this.halted = true;
    this.queue = [];
    this.wake?.();
  }

  private kick(): void {
    this.sending ??= this.drain().finally(() => {
      this.sending = undefined;
      if (this.queue.length > 0 && !this.halted) this.kick();
    });
  }

  private async drain(): Promise<void> {
    const inFlight = new Set<Promise<void>>();
    // A chunk is ready to go once its writes are all in the dirty copy.
    const ready = (c: ChunkRef): boolean => c.offset + c.length <= this.readable;
    while (!this.halted && (this.queue.length > 0 || inFlight.size > 0)) {
      if (this.queue.length === 0 || !ready(this.queue[0]!) || inFlight.size >= IN_FLIGHT) {
        // Until a chunk is cut or its last write lands in the dirty copy, or a batch is through.
        await Promise.race([new Promise<void>((r) => (this.wake = r)), ...inFlight]);
        this.wake = undefined;
        continue;
      }
      let n = 0;
      while (n < Math.min(BATCH, this.queue.length) && ready(this.queue[n]!)) n++;
      const batch = this.queue.splice(0, n);
      const sent = this.sendBatch(batch).then(
        () => undefined,
        (err: Error) => {
          // The close sends what is missing anyway; no point in retrying here.
          log.debug({ err: err.message }, 'early upload stopped; the rest travels at close');
          this.halt();
        },
      );
      inFlight.add(sent);
      void sent.finally(() => inFlight.delete(sent));
    }
    await Promise.all(inFlight);
  }

  /**
   * One batch, from a descriptor of its own on the dirty copy: open until
   * the send settles, whatever becomes of the writer's (closed at release,
   * with --write-back async).
   */
  private async sendBatch(batch: ChunkRef[]): Promise<void> {
    const file = this.file();
    const fh = await open(file, 'r');
    try {
      await this.send(batch, rangesIn(fh, `dirty copy ${file}`), { draft: this.draft, path: this.path() });
    } finally {
      await fh.close();
    }
  }
}
