// Accounts map to one of PARTITIONS virtual partitions by a hash of their id, and partitions map
// onto shards. The partition count is fixed for the life of a data directory, so partitions can
// later move between shards and centers without rewriting account ids.

export const PARTITIONS = 1024;

/** A 64-bit mix of the id folded to a partition: sequential ids spread evenly. */
export function partitionOf(account_id: bigint): number {
  return partitionOfWords(Number(account_id & 0xffff_ffffn) | 0, Number((account_id >> 32n) & 0xffff_ffffn) | 0);
}

/** partitionOf for an id given as its little-endian 32-bit halves (read straight from a record). */
export function partitionOfWords(lo: number, hi: number): number {
  lo = Math.imul(lo ^ (lo >>> 16), 0x85eb_ca6b);
  hi = Math.imul(hi ^ (hi >>> 13), 0xc2b2_ae35);
  let h = lo ^ hi;
  h = Math.imul(h ^ (h >>> 16), 0x7feb_352d);
  h ^= h >>> 15;
  return (h >>> 0) % PARTITIONS;
}

/** The shard that owns a partition: partitions are dealt round-robin over the shards. */
export function shardOfPartition(partition: number, shard_count: number): number {
  return partition % shard_count;
}

export function shardOfAccount(account_id: bigint, shard_count: number): number {
  return shardOfPartition(partitionOf(account_id), shard_count);
}
