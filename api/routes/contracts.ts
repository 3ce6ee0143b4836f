import { Router } from 'express';
import type { MikroORM } from '@mikro-orm/postgresql';
import { UniqueConstraintViolationException } from '@mikro-orm/core';
import type { Client } from '@temporalio/client';
import { WorkflowIdReusePolicy } from '@temporalio/client';
import { WorkflowExecutionAlreadyStartedError } from '@temporalio/common';
import { ConflictError, NotFoundError, UnavailableError, ValidationError } from '../../billing/errors.js';
import { ANCHOR_DAYS, FREQUENCIES, periodAt } from '../../billing/periods.js';
import { Contract, RateCard } from '../../db/entities.js';
import { findCustomer } from '../../db/customers.js';
import { newId } from '../../db/ids.js';
import { contractSchedule } from '../../db/invoices.js';
import { contractWorkflow } from '../../workflows/contract.js';
import { ContractIdKey, CustomerIdKey, LifecycleStateKey, contractWorkflowId } from '../../workflows/search-attributes.js';
import { allow } from '../auth.js';
import { hourTimestamp, objectAt, oneOf, reqUuid, str, stringRecord, timestamp, type Obj } from '../validate.js';

const CREATE_FIELDS = ['customer_id', 'starting_at', 'ending_before', 'rate_card_id', 'name', 'uniqueness_key', 'custom_fields', 'usage_statement_schedule'];
const SCHEDULE_FIELDS = ['frequency', 'day', 'billing_anchor_date'];

function schedule(body: Obj) {
  if (body.usage_statement_schedule === undefined || body.usage_statement_schedule === null) {
    return { frequency: 'MONTHLY' as const, day: 'FIRST_OF_MONTH' as const, anchor: undefined };
  }
  const path = 'usage_statement_schedule';
  const s = objectAt(body.usage_statement_schedule, path, SCHEDULE_FIELDS);
  const frequency = oneOf(s, 'frequency', FREQUENCIES, path)!;
  const day = oneOf(s, 'day', ANCHOR_DAYS, path, { optional: true }) ?? 'FIRST_OF_MONTH';
  const anchor = timestamp(s, 'billing_anchor_date', path, { optional: true });
  if (day === 'CUSTOM_DATE' && !anchor) throw new ValidationError(`${path}.billing_anchor_date`, 'is required when day is CUSTOM_DATE');
  if (day !== 'CUSTOM_DATE' && anchor) throw new ValidationError(`${path}.billing_anchor_date`, 'is only allowed when day is CUSTOM_DATE');
  return { frequency, day, anchor };
}

export function contractsRouter(orm: MikroORM, temporal: Client, taskQueue: string): Router {
  const r = Router();

  r.post('/v1/contracts/create', allow(), async (req, res) => {
    const body = objectAt(req.body, '', CREATE_FIELDS);
    const customerId = reqUuid(body, 'customer_id');
    const startingAt = hourTimestamp(body, 'starting_at') as string;
    const endingBefore = hourTimestamp(body, 'ending_before', '', { optional: true });
    if (endingBefore && Date.parse(endingBefore) <= Date.parse(startingAt)) throw new ValidationError('ending_before', 'must be after starting_at');
    const rateCardId = reqUuid(body, 'rate_card_id');
    const sched = schedule(body);
    const em = orm.em.fork();
    const customer = await findCustomer(em, customerId);
    if (customer.archivedAt) throw new ValidationError('customer_id', 'refers to an archived customer');
    if (!(await em.findOne(RateCard, { id: rateCardId }))) throw new NotFoundError('rate card', rateCardId, 'rate_card_id');

    const contract: Contract = {
      id: newId(), customerId: customer.id, rateCardId,
      name: str(body, 'name', '', { optional: true }) ?? null,
      startingAt: new Date(startingAt), endingBefore: endingBefore ? new Date(endingBefore) : null,
      usageStatementFrequency: sched.frequency, usageStatementDay: sched.day,
      billingAnchorDate: sched.anchor ? new Date(sched.anchor) : null,
      uniquenessKey: str(body, 'uniqueness_key', '', { optional: true, max: 128 }) ?? null,
      customFields: stringRecord(body, 'custom_fields') ?? {},
      createdAt: new Date(), archivedAt: null,
    };
    periodAt(contractSchedule(contract), 0); // rejects an impossible schedule before anything is written
    try {
      em.create(Contract, contract);
      await em.flush();
    } catch (err) {
      if (err instanceof UniqueConstraintViolationException) throw new ConflictError(`uniqueness_key: ${contract.uniquenessKey} was already used`);
      throw err;
    }

    // The contract is committed; now its lifecycle workflow. If Temporal cannot take it, the
    // contract is removed again so the caller can simply retry: nothing is left half-created.
    try {
      await temporal.workflow.start(contractWorkflow, {
        workflowId: contractWorkflowId(contract.id),
        taskQueue,
        args: [{ contractId: contract.id }],
        workflowIdReusePolicy: WorkflowIdReusePolicy.REJECT_DUPLICATE,
        typedSearchAttributes: [
          { key: CustomerIdKey, value: customer.id },
          { key: ContractIdKey, value: contract.id },
          { key: LifecycleStateKey, value: 'ACTIVE' },
        ],
      });
    } catch (err) {
      if (!(err instanceof WorkflowExecutionAlreadyStartedError)) {
        await orm.em.fork().nativeDelete(Contract, { id: contract.id });
        throw new UnavailableError(`could not start the contract workflow (nothing was stored, retry): ${(err as Error).message}`);
      }
    }
    res.json({ data: { id: contract.id } });
  });

  return r;
}
