// Loads the wire contract (proto/ghostfs/v1) for both ends of the wire.
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { join } from 'node:path';
import type { ProtoGrpcType } from './gen/ghostfs.js';
import { projectRoot } from '../util/project-root.js';

export const PROTOCOL_VERSION = 1;

/** Largest chunk is 4 MiB; a message carries one chunk plus a little framing. */
export const MAX_MESSAGE_BYTES = 16 * 1024 * 1024;

/** One CommitMany call: at most this many commits, with at most this many inline bytes (well under a message). */
export const MAX_COMMIT_BATCH = 64;
export const MAX_COMMIT_BATCH_BYTES = 8 * 1024 * 1024;

/** HTTP/2 receive window, both ways (the node's side: server-window.ts). */
export const FLOW_CONTROL_WINDOW = 32 * 1024 * 1024;

export const CHANNEL_OPTIONS: grpc.ChannelOptions = {
  'grpc.max_receive_message_length': MAX_MESSAGE_BYTES,
  'grpc.max_send_message_length': MAX_MESSAGE_BYTES,
  // HTTP/2's default 64 KiB window lets one 1 MiB chunk trickle in 16 round
  // trips; a wide window lets a chunk stream run at loopback speed.
  'grpc-node.flow_control_window': FLOW_CONTROL_WINDOW,
};

let loaded: ProtoGrpcType | undefined;

export function wire(): ProtoGrpcType {
  if (!loaded) {
    const def = protoLoader.loadSync(join(projectRoot(), 'proto', 'ghostfs', 'v1', 'ghostfs.proto'), {
      keepCase: false,
      longs: Number,
      enums: String,
      defaults: true,
      oneofs: true,
    });
    loaded = grpc.loadPackageDefinition(def) as unknown as ProtoGrpcType;
  }
  return loaded;
}
