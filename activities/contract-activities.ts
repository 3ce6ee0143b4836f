import type { Schedule } from '../billing/periods.js';
import { NotFoundError } from '../billing/errors.js';
import { Contract } from '../db/entities.js';
import { invoiceIdFor } from '../db/ids.js';
import { contractSchedule } from '../db/invoices.js';
import { rollOverToSuccessor } from '../db/rollover.js';
import type { ActivityDeps } from './index.js';
import { classified } from './failures.js';

export interface ContractPlan {
  customerId: string;
  schedule: Schedule;
  invoiceGracePeriodMs: number;
  /** An archived contract closes no more periods. */
  archived?: boolean;
}

export function createContractActivities({ orm, invoiceGracePeriodMs }: ActivityDeps) {
  return {
    /** Read-only: the contract's period schedule and the grace period, recorded in workflow history. */
    async loadContractPlan({ contractId }: { contractId: string }): Promise<ContractPlan> {
      return classified(async () => {
        const contract = await orm.em.fork().findOne(Contract, { id: contractId });
        if (!contract) throw new NotFoundError('contract', contractId);
        return { customerId: contract.customerId, schedule: contractSchedule(contract), invoiceGracePeriodMs, archived: contract.archivedAt !== null && contract.archivedAt !== undefined };
      });
    },

    /**
     * At the contract's end: its commits and credits with a rollover_fraction roll over to the
     * contract that renews or supersedes it. Idempotent (a done rollover is recorded on the grants).
     */
    async rollOverAtContractEnd({ contractId }: { contractId: string }): Promise<{ rolled: number }> {
      return classified(() => rollOverToSuccessor(orm.em.fork(), contractId));
    },

    /** Pure: the period's invoice id, the same one its live draft shows. */
    async invoiceIdForPeriod({ contractId, periodStart }: { contractId: string; periodStart: string }): Promise<string> {
      return invoiceIdFor(contractId, periodStart);
    },
  };
}
