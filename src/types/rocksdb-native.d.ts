// The parts of rocksdb-native's API ghostfs uses (the package ships no types).
declare module 'rocksdb-native' {
  interface Range {
    gt?: Buffer;
    gte?: Buffer;
    lt?: Buffer;
    lte?: Buffer;
    reverse?: boolean;
    limit?: number;
    values?: boolean;
    capacity?: number;
  }
  interface ReadBatch {
    get(key: Buffer): Promise<Buffer | null>;
    flush(): Promise<void>;
    tryFlush(): void;
    destroy(): void;
  }
  interface WriteBatch {
    put(key: Buffer, value: Buffer): Promise<void>;
    tryPut(key: Buffer, value: Buffer): void;
    tryDelete(key: Buffer): void;
    tryDeleteRange(start: Buffer, end: Buffer): void;
    flush(): Promise<void>;
    destroy(): void;
  }
  interface Options {
    readOnly?: boolean;
    createIfMissing?: boolean;
    maxBackgroundJobs?: number;
    /** Bytes a memtable holds before it is flushed (default 64 MiB). */
    writeBufferSize?: number;
    maxOpenFiles?: number;
  }
  class RocksDB {
    constructor(path: string, opts?: Options);
    ready(): Promise<void>;
    close(opts?: { force?: boolean }): Promise<void>;
    get(key: Buffer): Promise<Buffer | null>;
    read(opts?: { capacity?: number; autoDestroy?: boolean }): ReadBatch;
    write(opts?: { capacity?: number; autoDestroy?: boolean }): WriteBatch;
    iterator(range: Range): AsyncIterable<{ key: Buffer; value: Buffer | null }> & { destroy(): void };
    flush(): Promise<void>;
    compactRange(start?: Buffer | null, end?: Buffer | null): Promise<void>;
    approximateSize(start: Buffer, end: Buffer): Promise<number>;
    /** The write-ahead log written to now; `path` is relative to the database directory ("/000004.log"). */
    currentWalFile(): Promise<{ path: string; number: number; size: number }>;
    readonly closed: boolean;
  }
  export default RocksDB;
}
