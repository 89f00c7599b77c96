// Filesystem errors across the wire. The node sends the errno it saw in the
// `ghostfs-errno` trailer of a gRPC error; the mount hands that errno to the
// kernel. Transport failures (deadline, unavailable) map to their own errnos.
import * as grpc from '@grpc/grpc-js';

export const ERRNO_KEY = 'ghostfs-errno';

/** An error with a POSIX errno name, raised deliberately. */
export class FsError extends Error {
  constructor(
    readonly errno: string,
    message: string,
  ) {
    // An answer to give the kernel, not a fault to trace: no stack (capturing
    // one was ~7 us of every failed lookup, and tools look up many missing names).
    const limit = Error.stackTraceLimit;
    Error.stackTraceLimit = 0;
    try {
      super(message);
    } finally {
      Error.stackTraceLimit = limit;
    }
    this.name = 'FsError';
  }
}

/**
 * Trailer naming what a node's ENOENT is about when it is not a path:
 * 'chunk', a chunk it was to hold (uploaded to it, or in a draft) and does
 * not. The sender may send it again; the file it commits is not refused for it.
 */
export const LACKS_KEY = 'ghostfs-lacks';

/** ENOENT for a chunk the node was to hold (see LACKS_KEY). */
export class ChunkMissing extends FsError {
  constructor(message: string) {
    super('ENOENT', message);
  }
}

/** What a node's error is about when it is not a path (the LACKS_KEY it sends), if anything. */
export function lacksOf(err: unknown): string | undefined {
  return err instanceof ChunkMissing ? 'chunk' : undefined;
}

/** The node said it lacks a chunk (an older node says only ENOENT). */
export function lacksChunk(err: unknown): boolean {
  return trailer(err, LACKS_KEY) === 'chunk';
}

/** A value the node put in its answer's trailer, if the error comes from its answer. */
function trailer(err: unknown, key: string): grpc.MetadataValue | undefined {
  return (err as grpc.ServiceError)?.metadata?.get?.(key)?.[0];
}

const CODE_FOR_ERRNO: Record<string, grpc.status> = {
  ENOENT: grpc.status.NOT_FOUND,
  EEXIST: grpc.status.ALREADY_EXISTS,
  EACCES: grpc.status.PERMISSION_DENIED,
  EPERM: grpc.status.PERMISSION_DENIED,
  EINVAL: grpc.status.INVALID_ARGUMENT,
  ENAMETOOLONG: grpc.status.INVALID_ARGUMENT,
  ELOOP: grpc.status.INVALID_ARGUMENT,
  EXDEV: grpc.status.INVALID_ARGUMENT,
  ENOSPC: grpc.status.RESOURCE_EXHAUSTED,
  EDQUOT: grpc.status.RESOURCE_EXHAUSTED,
  ENOTEMPTY: grpc.status.FAILED_PRECONDITION,
  ENOTDIR: grpc.status.FAILED_PRECONDITION,
  EISDIR: grpc.status.FAILED_PRECONDITION,
  ESTALE: grpc.status.FAILED_PRECONDITION,
  EROFS: grpc.status.FAILED_PRECONDITION,
  EBUSY: grpc.status.UNAVAILABLE,
  ENOTSUP: grpc.status.UNIMPLEMENTED,
  EOPNOTSUPP: grpc.status.UNIMPLEMENTED,
  ENOSYS: grpc.status.UNIMPLEMENTED,
};

/** Turns any thrown error into a gRPC error carrying its errno. */
export function toServiceError(err: unknown): Partial<grpc.StatusObject> {
  const e = err as NodeJS.ErrnoException & { errno?: unknown };
  const errno = err instanceof FsError ? err.errno : typeof e?.code === 'string' && /^E[A-Z0-9]+$/.test(e.code) ? e.code : 'EIO';
  const metadata = new grpc.Metadata();
  metadata.set(ERRNO_KEY, errno);
  const lacks = lacksOf(err);
  if (lacks) metadata.set(LACKS_KEY, lacks);
  return {
    code: CODE_FOR_ERRNO[errno] ?? grpc.status.INTERNAL,
    details: `${errno}: ${stripPrefix(e?.message ?? String(err), errno)}`,
    metadata,
  };
}

function stripPrefix(msg: string, errno: string): string {
  return msg.startsWith(errno + ': ') ? msg.slice(errno.length + 2) : msg;
}

/** What the node said went wrong (the errno in its trailer), if the error comes from its answer. */
export function nodeErrno(err: unknown): grpc.MetadataValue | undefined {
  return trailer(err, ERRNO_KEY);
}

/** The node does not have the method called (an older node), as opposed to a filesystem ENOSYS it reports. */
export function isUnimplemented(err: unknown): boolean {
  const e = err as grpc.ServiceError;
  return e?.code === grpc.status.UNIMPLEMENTED && nodeErrno(err) === undefined && !answerLost(err);
}

/**
 * A unary call whose status came back but whose answer did not (its DATA
 * frames lost on the way): grpc-js ends it with UNIMPLEMENTED "No message
 * received". The node did run the call; only its answer is missing. Seen
 * under the fault suite's lost DATA frames, where a commit so answered was
 * taken for a refusal and the file's next version then met it as someone
 * else's change.
 */
export function answerLost(err: unknown): boolean {
  const e = err as grpc.ServiceError;
  return e?.code === grpc.status.UNIMPLEMENTED && nodeErrno(err) === undefined && /^No message received/.test(e.details ?? '');
}

/**
 * A call whose message, or answer, is over the size limit (grpc-js fails it
 * with RESOURCE_EXHAUSTED on whichever side would send or receive it).
 * Nothing is wrong with the node: a file's chunk list is too long for one
 * message (more than about 1.3 TiB of holes, or 340 GiB of data).
 */
export function tooLargeToSend(err: unknown): boolean {
  const e = err as grpc.ServiceError;
  return (
    e?.code === grpc.status.RESOURCE_EXHAUSTED &&
    nodeErrno(err) === undefined &&
    /^(Attempted to send message with a size larger than|Received message larger than max|Sent message larger than max)/.test(e.details ?? '')
  );
}

/** The errno a failed call stands for, as the mount reports it to the kernel. */
export function errnoOf(err: unknown): string {
  const e = err as grpc.ServiceError;
  const fromNode = nodeErrno(err);
  if (typeof fromNode === 'string') return fromNode;
  if (err instanceof FsError) return err.errno;
  if (answerLost(err)) return 'ETIMEDOUT'; // as a call whose answer did not come in time
  if (tooLargeToSend(err)) return 'EFBIG';
  switch (e?.code) {
    case grpc.status.DEADLINE_EXCEEDED:
      return 'ETIMEDOUT';
    case grpc.status.UNAVAILABLE:
      return 'EHOSTDOWN';
    case grpc.status.UNAUTHENTICATED:
    case grpc.status.PERMISSION_DENIED:
      return 'EACCES';
    case grpc.status.NOT_FOUND:
      return 'ENOENT';
    default:
      return typeof (e as unknown as NodeJS.ErrnoException)?.code === 'string' ? String((e as unknown as NodeJS.ErrnoException).code) : 'EIO';
  }
}

/** An error shaped as gRPC's, for failures found on the client side (the bulk lane, a stream gone quiet); an errno only if the node gave one. */
export function serviceError(code: grpc.status, details: string, errno?: string, lacks?: string): grpc.ServiceError {
  const metadata = new grpc.Metadata();
  if (errno) metadata.set(ERRNO_KEY, errno);
  if (lacks) metadata.set(LACKS_KEY, lacks);
  return Object.assign(new Error(details), { code, details, metadata });
}
