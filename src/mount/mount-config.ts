// What a mount is started with: the settings, their choices and defaults.
// Apart from the mount itself, so that the command line can describe and
// check them without loading the mount (see src/cli/mount.ts).
import { nativeAddon } from '../native/addon.js';
import type { IdMap } from './owner-map.js';

export const DRIVERS = ['native', 'fuse-native'] as const;
export type DriverName = (typeof DRIVERS)[number];

/** The native driver when its addon was built here; fuse-native is the portable fallback. */
export function defaultDriver(): DriverName {
  return nativeAddon() ? 'native' : 'fuse-native';
}

/**
 * How long the kernel may trust names and attributes by default. The
 * native driver is told by the change feed what changed and invalidates it,
 * so it can trust long; fuse-native cannot invalidate and trusts briefly.
 */
export function defaultAttrTimeout(driver: DriverName): number {
  return driver === 'native' ? 30 : 1;
}

export const WRITE_BACK_MODES = ['sync', 'async'] as const;
export type WriteBackMode = (typeof WRITE_BACK_MODES)[number];

export interface MountConfig {
  endpoints: string[];
  mountpoint: string;
  workspace: string;
  cacheDir: string;
  token?: string;
  tls?: { ca?: string; cert?: string; key?: string };
  driver: DriverName;
  /** Deadline of each remote call. */
  deadlineMs: number;
  attrTimeoutS: number;
  readaheadChunks: number;
  /** Chunk bytes over the nodes' bulk lane where they offer one (src/wire/bulk-lane.ts); false: gRPC only. */
  bulkLane?: boolean;
  /** 'sync': close() returns once the node has the file; 'async': once it is journaled here, the node getting it moments later. */
  writeBack: WriteBackMode;
  clientId: string;
  /** Chunk cache limits: most bytes kept, free space left on its filesystem. */
  cacheQuotaBytes: number;
  minFreeBytes: number;
  /** Native driver: big files read again are passed through to whole local copies (FUSE passthrough); default on. */
  passthrough?: boolean;
  /** Whose files are shown as the mount user's (owner-map.ts); default: user, or none when run as root. */
  idmap?: IdMap;
  /** Other users may use the mount (FUSE allow_other): what each makes is theirs. */
  allowOther?: boolean;
  debug?: boolean;
}

export const ALLOW_OTHER_DRIVER = "--allow-other needs the native driver: fuse-native does not say which user asks, so what others made would be the mount's.";
