// Storage profiles: how hard the node may hit the disk it indexes. Local SSDs
// take large reads and parallel stats; network filesystems answer each call
// slowly, so fewer hashing jobs and smaller reads keep other clients served.
export type ProfileName = 'ssd' | 'nfs';

export interface StorageProfile {
  hashConcurrency: number;
  readSize: number;
  statConcurrency: number;
  /** Metadata calls (lstat, readdir, unlink, mkdir, rename...) made inline on the event loop, not through the thread pool: where metadata is local (see node/meta-calls.ts). */
  inlineMetadata: boolean;
}

export const PROFILES: Record<ProfileName, StorageProfile> = {
  ssd: { hashConcurrency: 2, readSize: 4 * 1024 * 1024, statConcurrency: 64, inlineMetadata: true },
  nfs: { hashConcurrency: 2, readSize: 1024 * 1024, statConcurrency: 16, inlineMetadata: false },
};
