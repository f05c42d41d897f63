// Child process for test/coordinator.test.ts: takes the leadership of a partition group and then
// reports, every 20 ms, whether it may still lead: `<wall ms> <0|1>` per line. The test freezes it
// with SIGSTOP and checks that it stops claiming leadership before a successor can exist.

import { Coordinator } from '../../src/replication/coordinator.ts';

const [endpoint, cluster, center, group] = process.argv.slice(2);
const coordinator = await Coordinator.open({ endpoints: [endpoint], cluster, center, lease_ttl_s: 2 });
// Leadership belongs to the lease it was taken under: after a lost lease the coordinator gets a new
// one (a new generation), which leads nothing until a new takeover.
const generation = coordinator.lease_generation;
const taken = await coordinator.takeOver(Number(group));
process.stdout.write(`took ${taken.ok ? taken.state.epoch : `no: ${taken.reason}`}\n`);
setInterval(() => process.stdout.write(`${Date.now()} ${coordinator.mayLead(generation) ? 1 : 0}\n`), 20);
