// Work on a cache dir that no mount is using: what it holds, purge, gc.
// Data not yet written back (the journal and the dirty copies it names) is
// never touched by any of this.
import { readdir, stat, unlink, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { ChunkStore } from '../cache/chunk-store.js';
import { Store, prefix } from '../store/db.js';
import { Journal } from '../cache/journal.js';
import { log } from '../log.js';

export interface CacheSummary {
  cacheDir: string;
  chunks: number;
  chunkBytes: number;
  workspaces: { id: string; entries: number; pendingWriteBacks: number }[];
}

/** Workspaces with metadata in the database, and their entry / journal counts. */
async function workspaces(db: Store): Promise<CacheSummary['workspaces']> {
  const counts = new Map<string, { entries: number; pendingWriteBacks: number }>();
  await db.forEach(Buffer.alloc(0), (k) => {
    const parts = k.toString('latin1').split('\0');
    const ws = Buffer.from(parts[0]!, 'latin1').toString('utf8');
    const c = counts.get(ws) ?? { entries: 0, pendingWriteBacks: 0 };
    if (parts[1] === 'e') c.entries++;
    if (parts[1] === 'j') c.pendingWriteBacks++;
    counts.set(ws, c);
  });
  return [...counts].map(([id, c]) => ({ id, ...c }));
}

/** Opens a cache dir's chunk store and database (failing if a mount holds them) for one job. */
async function withCache<T>(cacheDir: string, fn: (chunks: ChunkStore, db: Store) => Promise<T>): Promise<T> {
  const chunks = new ChunkStore(join(cacheDir, 'chunks'));
  await chunks.init(); // also removes interrupted chunk writes
  try {
    const db = await Store.open(join(cacheDir, 'db'));
    try {
      return await fn(chunks, db);
    } finally {
      await db.close();
    }
  } finally {
    await chunks.close();
  }
}

export function summarize(cacheDir: string): Promise<CacheSummary> {
  return withCache(cacheDir, async (chunks, db) => {
    const s = chunks.stats();
    return { cacheDir, chunks: s.chunks, chunkBytes: s.bytes, workspaces: await workspaces(db) };
  });
}

export interface PurgeResult {
  chunks: number;
  bytes: number;
  workspacesCleared: string[];
  keptPending: number;
}

/** Whole local copies of big files (the native driver's passthrough): removed with the chunks they repeat. */
async function dropCopies(cacheDir: string): Promise<number> {
  const dir = join(cacheDir, 'copies');
  let bytes = 0;
  for (const f of await readdir(dir).catch(() => [] as string[])) bytes += (await stat(join(dir, f)).catch(() => undefined))?.size ?? 0;
  await rm(dir, { recursive: true, force: true });
  return bytes;
}

/** Removes cached chunks (and local copies) and, if asked, the metadata of workspaces (never their pending write-backs). */
export function purge(cacheDir: string, opts: { metadata: boolean; workspace?: string; onProgress?: (done: number, total: number) => void }): Promise<PurgeResult> {
  return withCache(cacheDir, async (chunks, db) => {
    const keys = chunks.keys();
    const before = chunks.stats().bytes;
    for (const [i, k] of keys.entries()) {
      await chunks.remove(k);
      if (i % 256 === 0) opts.onProgress?.(i, keys.length);
    }
    opts.onProgress?.(keys.length, keys.length);
    const copyBytes = await dropCopies(cacheDir);
    const cleared: string[] = [];
    let keptPending = 0;
    if (opts.metadata) {
      for (const w of await workspaces(db)) {
        if (opts.workspace && w.id !== opts.workspace) continue;
        // Everything but the journal: entries, manifests, feed position.
        for (const kind of ['e', 'c', 'm']) await db.deletePrefix(prefix(w.id, kind));
        keptPending += w.pendingWriteBacks;
        cleared.push(w.id);
      }
    }
    log.info({ cacheDir, chunks: keys.length, bytes: before + copyBytes, workspacesCleared: cleared, keptPending }, 'purged cache');
    return { chunks: keys.length, bytes: before + copyBytes, workspacesCleared: cleared, keptPending };
  });
}

export interface GcResult {
  evictedChunks: number;
  evictedBytes: number;
  removedWorkspaces: string[];
  staleFiles: number;
}

/** Evicts down to a size, drops caches of workspaces no longer active, removes stale temp files. */
export function gc(cacheDir: string, opts: { maxBytes?: number; keepWorkspaces?: string[]; tempTtlMs: number }): Promise<GcResult> {
  return withCache(cacheDir, async (chunks, db) => {
    let evictedBytes = 0;
    const before = chunks.stats().chunks;
    if (opts.maxBytes !== undefined && chunks.stats().bytes > opts.maxBytes) evictedBytes = await chunks.evict(chunks.stats().bytes - opts.maxBytes, 'gc --max-size');
    // Local copies repeat chunks' bytes: a cache cut down to a size keeps none (reading a file again makes one).
    if (opts.maxBytes !== undefined) evictedBytes += await dropCopies(cacheDir);
    const removed: string[] = [];
    if (opts.keepWorkspaces) {
      for (const w of await workspaces(db)) {
        if (opts.keepWorkspaces.includes(w.id)) continue;
        if (w.pendingWriteBacks > 0) {
          log.warn({ workspace: w.id, pending: w.pendingWriteBacks }, 'not removing an inactive workspace with write-backs pending');
          continue;
        }
        await db.deletePrefix(prefix(w.id));
        await rm(join(cacheDir, 'dirty', w.id), { recursive: true, force: true });
        removed.push(w.id);
      }
    }
    // Dirty copies no journal record names (their writer never got a successful close) past the TTL.
    let staleFiles = 0;
    for (const ws of await readdir(join(cacheDir, 'dirty')).catch(() => [] as string[])) {
      const named = new Set((await new Journal(db, ws).load()).map((e) => e.dirty));
      for (const f of await readdir(join(cacheDir, 'dirty', ws)).catch(() => [] as string[])) {
        const p = join(cacheDir, 'dirty', ws, f);
        const st = await stat(p).catch(() => undefined);
        if (!st || named.has(f) || f.endsWith('.failed') || Date.now() - st.mtimeMs < opts.tempTtlMs) continue;
        await unlink(p).catch(() => undefined);
        staleFiles++;
      }
    }
    const result = { evictedChunks: before - chunks.stats().chunks, evictedBytes, removedWorkspaces: removed, staleFiles };
    log.info({ cacheDir, ...result }, 'cache gc');
    return result;
  });
}
