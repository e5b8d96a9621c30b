import './polyfill.ts';
import { noise } from '@chainsafe/libp2p-noise';
import { yamux } from '@chainsafe/libp2p-yamux';
import { bootstrap } from '@libp2p/bootstrap';
import { gossipsub, StrictNoSign, type GossipSub } from '@libp2p/gossipsub';
import { identify, type Identify } from '@libp2p/identify';
import type { ConnectionGater, PrivateKey } from '@libp2p/interface';
import { kadDHT, passthroughMapper, type KadDHT } from '@libp2p/kad-dht';
import { mdns } from '@libp2p/mdns';
import { ping, type Ping } from '@libp2p/ping';
import { tcp } from '@libp2p/tcp';
import { multiaddr } from '@multiformats/multiaddr';
import { createLibp2p, type Libp2p, type Libp2pOptions } from 'libp2p';
import type { MeshConfig } from '../node/config.ts';
import { InvalidInputError } from '../spec/index.ts';

export interface MeshServices {
  identify: Identify;
  ping: Ping;
  pubsub: GossipSub;
  dht: KadDHT;
  [key: string]: unknown;
}

export type MeshHost = Libp2p<MeshServices>;

/** vmesh's own DHT, apart from the public IPFS one: records only among vmesh nodes. */
export const DHT_PROTOCOL = '/vmesh/kad/1.0.0';

/** Checks the configured addresses up front, so that a typo is named rather than failing deep in libp2p. */
export function checkMeshAddresses(config: MeshConfig): void {
  config.listen.forEach((a, i) => parseAddress(a, `mesh.listen[${i}]`));
  config.join.forEach((a, i) => {
    const ma = parseAddress(a, `mesh.join[${i}]`);
    if (ma.getComponents().find((c) => c.name === 'p2p') === undefined) {
      throw new InvalidInputError(`mesh.join[${i}]: ${a} must end in /p2p/<node id> (vmesh nodes shows a node's full addresses)`, { field: `mesh.join[${i}]` });
    }
  });
}

function parseAddress(text: string, field: string) {
  try {
    return multiaddr(text);
  } catch (err) {
    throw new InvalidInputError(`${field}: ${JSON.stringify(text)} is not a multiaddr (${(err as Error).message}); e.g. /ip4/10.0.0.1/tcp/7421`, { field });
  }
}

const LOOPBACK_IPS = ['127.0.0.1', '::1'];

/**
 * The least time libp2p's connection monitor waits for a ping before it aborts the connection (libp2p's
 * own floor is 5 s). With 50 nodes on 2 cores all publishing a new advert at once, event loops stalled for
 * longer than that: in one run the monitors aborted 568 of the mesh's ~975 connections within 6 s, and each
 * came back at the cost of a noise handshake and identify at both ends. In two other runs a node that joined
 * right after such a burst waited 15–20 s for its first connection, its dial having timed out. A peer that
 * is busy is not gone; one that is gone leaves the membership by its adverts' TTL, whatever becomes of the
 * connection. With 30 s, four such runs closed no connection. The mesh benchmark counts the connections
 * closed while the mesh stands; test/mesh/busy-peer.test.ts freezes a peer for 16 s.
 */
export const MONITOR_PING_TIMEOUT_MS = 30_000;

/**
 * A libp2p host for one node: TCP with noise and yamux; identify, ping, gossipsub and vmesh's kad-dht;
 * bootstrap from the join list and, when switched on, multicast DNS.
 */
export async function createMeshHost(key: PrivateKey, config: MeshConfig, gater: ConnectionGater): Promise<MeshHost> {
  checkMeshAddresses(config);
  const peerDiscovery: NonNullable<Libp2pOptions['peerDiscovery']> = [];
  if (config.join.length > 0) peerDiscovery.push(bootstrap({ list: config.join, timeout: 100 }));
  if (config.mdns) peerDiscovery.push(mdns({ serviceTag: 'vmesh.local' }));
  return createLibp2p({
    privateKey: key,
    addresses: { listen: config.listen },
    transports: [tcp()],
    connectionEncrypters: [noise()],
    streamMuxers: [yamux()],
    connectionGater: gater,
    connectionManager: { inboundConnectionThreshold: config.inboundConnectionsPerSecond },
    // libp2p pings every connection to find dead ones (10 s by default); proximity pings members besides
    // (src/mesh/mesh.ts), so this check can be rarer: one ping per connection per interval is a cost that
    // grows with the mesh. A connection whose ping is not answered in time is aborted: a peer that is busy
    // is not dead, and hanging up on it makes it busier (a new connection costs a noise handshake, identify
    // and gossip set-up at both ends).
    connectionMonitor: { pingInterval: Math.max(10_000, 6 * config.pingIntervalMs), pingTimeout: { minTimeout: MONITOR_PING_TIMEOUT_MS } },
    peerDiscovery,
    services: {
      identify: identify(),
      // libp2p's connection monitor pings every connection too, and aborts the connection when its
      // ping cannot open a stream: room for its ping beside proximity's, from either side.
      ping: ping({ maxOutboundStreams: 4, maxInboundStreams: 8 }),
      pubsub: gossipsub({
        allowPublishToZeroTopicPeers: true,
        ignoreDuplicatePublishError: true,
        emitSelf: false,
        // Every message on vmesh's topics is a signed envelope that receivers check (src/trust): a
        // second gossipsub signature would double the cost of each advert for nothing. Unsigned
        // messages carry no author or seqno, and are told apart by the hash of their bytes.
        globalSignaturePolicy: StrictNoSign,
        // Gossipsub scores down every peer beyond the 10th from one IP (a sybil defence), and never
        // meshes a peer scored below zero: eleven nodes on one machine would stop hearing each other.
        // Peers over loopback are this machine's own.
        scoreParams: { IPColocationFactorWhitelist: new Set(LOOPBACK_IPS) },
        // What an idle mesh costs a node grows with the mesh through gossip: each heartbeat told a quarter
        // of all non-mesh peers (gossipFactor) which messages it has, on each topic. Adverts and reports
        // come every few seconds, and mesh peers forward them anyway: gossip goes to three peers. Idle CPU per
        // node in a 20-node mesh, with the rarer connection check above: 37.7 -> 31.2 and 46.5 -> 36.4 ms a
        // second in two A/B runs (2026-12-02). Raising idontwantMinDataSize as well cost each node 60 MiB
        // of RSS and slowed starts by half: the IDONTWANTs keep duplicates from piling up.
        gossipFactor: 0,
        Dlazy: 3,
      }),
      dht: kadDHT({ protocol: DHT_PROTOCOL, clientMode: false, peerInfoMapper: passthroughMapper }),
    },
  });
}
