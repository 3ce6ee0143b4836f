"""
The Stripe-protocol server of Accrue's tests: localstripe (PyPI, stateful, in memory), with the
parts of Stripe's documented behaviour Accrue relies on that localstripe lacks, added here:

- Idempotency-Key: a POST repeated with the same key answers the first result (same status and
  body) without doing anything again; the same key with different parameters is a 400
  idempotency_error. (https://docs.stripe.com/api/idempotent_requests)
- Invoices: `collection_method`, `days_until_due`, `auto_advance`, `currency` on create;
  invoice items created with `invoice=` join that invoice's lines; `POST /v1/invoices/{id}/finalize`;
  `hosted_invoice_url`; a declined `POST /v1/invoices/{id}/pay` answers 402 card_error (as Stripe
  does) and sends `invoice.payment_failed`; a paid invoice also sends `invoice.paid`;
  `pay` with `paid_out_of_band=true` marks an open invoice paid without a charge
  (`paid_out_of_band: true`; paying it again is a 400 "Invoice is already paid");
  `GET /v1/invoice_payments?payment[payment_intent]=…` (what a charge paid, API 2025-03-31 on).
- Idempotency-Key in use: a POST whose key belongs to a request still in progress answers 409
  `idempotency_key_in_use` (type `invalid_request_error`), as Stripe does; try again later.
- Test controls under /_config (not Stripe): `POST /_config/holds` holds the next `count` requests
  made with an API key on one route (`POST /v1/invoices/{id}/pay`, as in `/_config/requests`)
  inside the server — its idempotency key registered, nothing done yet — until
  `POST /_config/holds/release` (same key); `GET /_config/holds?key=…` counts those held now.
  `POST /_config/faults` queues a fault for one API
  key — the next `count` requests under /v1 made with that key answer `status` (500, 429…),
  before (`when=before`) or after (`when=after`: the work is done and the answer lost) handling
  them; faults queued one after the other apply in turn. Test files share this server and run in
  parallel, so a fault only ever hits the key it names. `GET /_config/faults?key=…` shows what
  is left for a key, `DELETE /_config/faults?key=…` drops them; `GET /_config/requests` counts requests.

Run: python3 localstripe_server.py --port N (PYTHONPATH must reach localstripe).
"""
import argparse
import asyncio
import json
import time

from aiohttp import web

from localstripe import resources
from localstripe.errors import UserError, json_response
from localstripe.resources import Event, Invoice, InvoiceItem, InvoiceLineItem, store
from localstripe.webhooks import schedule_webhook
from localstripe import server

store.dump_to_disk = lambda *a, **k: None  # in memory only

# ---- invoices -------------------------------------------------------------------------------
def _invoice_create(cls, customer=None, collection_method=None, days_until_due=None,
                    auto_advance=None, currency=None, metadata=None, description=None,
                    pending_invoice_items_behavior='exclude', **kwargs):
    if kwargs:
        raise UserError(400, 'Received unknown parameters: ' + ', '.join(kwargs.keys()))
    if collection_method not in (None, 'charge_automatically', 'send_invoice'):
        raise UserError(400, 'Invalid collection_method')
    if collection_method == 'send_invoice' and days_until_due is None:
        raise UserError(400, 'Missing required param: days_until_due.')
    # A draft with only the items added to it later (Stripe's default today): other pending
    # items of the customer are held out while localstripe builds the invoice.
    held = []
    if pending_invoice_items_behavior == 'exclude' and isinstance(customer, str):
        held = [ii for ii in InvoiceItem._api_list_all(None, customer=customer, limit=99)._list if ii.invoice is None]
    for ii in held:
        ii.invoice = '__held__'
    try:
        inv = Invoice(customer=customer, metadata=metadata, description=description)
    finally:
        for ii in held:
            ii.invoice = None
    inv.collection_method = collection_method or 'charge_automatically'
    inv.days_until_due = int(days_until_due) if days_until_due is not None else None
    inv.auto_advance = auto_advance in (True, 'true')
    if currency:
        inv.currency = currency
    return inv


Invoice._api_create = classmethod(_invoice_create)

_orig_item_init = InvoiceItem.__init__


def _item_init(self, invoice=None, **kwargs):
    if invoice is not None:
        target = Invoice._api_retrieve(invoice)
        if target.status != 'draft':
            raise UserError(400, 'You can only add invoice items to draft invoices.')
    _orig_item_init(self, invoice=invoice, **kwargs)
    if invoice is not None:
        target.lines._list.append(InvoiceLineItem(self))
        target.currency = self.currency


InvoiceItem.__init__ = _item_init

Invoice.hosted_invoice_url = property(lambda self: 'https://invoice.stripe.test/' + self.id)


def _finalize_invoice(id, auto_advance=None, **kwargs):
    inv = Invoice._api_retrieve(id)
    if inv.status != 'draft':
        raise UserError(400, 'This invoice is already finalized, you can\'t re-finalize a non-draft invoice.')
    inv._finalize()
    schedule_webhook(Event('invoice.finalized', inv))
    if inv.total <= 0:
        inv._on_payment_success()
    return inv


_orig_pay = Invoice._api_pay_invoice.__func__


def _pay_invoice(cls, id, paid_out_of_band=None, **kwargs):
    if paid_out_of_band in (True, 'true'):
        # Paid outside Stripe: no charge; the invoice is paid and can be paid no more.
        inv = Invoice._api_retrieve(id)
        if inv.status == 'paid':
            raise UserError(400, 'Invoice is already paid')
        if inv.status != 'open':
            raise UserError(400, 'You can only pay an open invoice out of band.')
        inv._paid_out_of_band = True
        inv._on_payment_success()
        return inv
    inv = _orig_pay(cls, id)
    if inv.status == 'open':
        schedule_webhook(Event('invoice.payment_failed', inv))
        raise UserError(402, 'Your card was declined.', {'type': 'card_error', 'code': 'card_declined', 'decline_code': 'generic_decline'})
    return inv


Invoice._api_pay_invoice = classmethod(_pay_invoice)

_orig_status = Invoice.status
Invoice.status = property(lambda self: 'paid' if getattr(self, '_paid_out_of_band', False) and not self._voided and not self._draft else _orig_status.fget(self))
Invoice.paid_out_of_band = property(lambda self: getattr(self, '_paid_out_of_band', False))

_orig_success = Invoice._on_payment_success


def _on_payment_success(self):
    _orig_success(self)
    schedule_webhook(Event('invoice.paid', self))


Invoice._on_payment_success = _on_payment_success

_orig_void = Invoice._api_void_invoice.__func__


def _void_invoice(cls, id, **kwargs):
    inv = Invoice._api_retrieve(id)
    if inv.payment_intent is None and inv.status == 'open':
        # Never charged (send_invoice): localstripe would try to cancel a payment intent it lacks.
        inv._voided = True
        inv.status_transitions['voided_at'] = int(time.time())
        schedule_webhook(Event('invoice.voided', inv))
        return inv
    inv = _orig_void(cls, id)
    schedule_webhook(Event('invoice.voided', inv))
    return inv


Invoice._api_void_invoice = classmethod(_void_invoice)

# ---- the request pipeline: faults outermost, idempotency innermost --------------------------
faults = []  # queue of {'key', 'status', 'count', 'when'}
requests = {'total': 0, 'by_route': {}}
idempotent = {}


def route_of(request):
    return request.method + ' ' + '/'.join(p if not ('_' in p and len(p) > 12) else '{id}' for p in request.path.split('/'))


@web.middleware
async def fault_middleware(request, handler):
    if not request.path.startswith('/v1/'):
        return await handler(request)
    requests['total'] += 1
    route = route_of(request)
    requests['by_route'][route] = requests['by_route'].get(route, 0) + 1
    faults[:] = [f for f in faults if f['count'] > 0]
    key = server.get_api_key(request)
    fault = next((f for f in faults if f['key'] == key), None)
    if fault is not None:
        fault['count'] -= 1
        status = fault['status']
        if fault['when'] == 'after':
            try:
                await handler(request)
            except Exception:
                pass
        kind = 'rate_limit_error' if status == 429 else 'api_error'
        return json_response({'error': {'type': kind, 'message': 'injected by the test (%d)' % status}}, status=status)
    return await handler(request)


in_progress = set()  # idempotency keys of requests being handled


@web.middleware
async def idempotency_middleware(request, handler):
    key = request.headers.get('Idempotency-Key')
    if request.method != 'POST' or not key or not request.path.startswith('/v1/'):
        return await handler(request)
    body = await request.read()
    seen = idempotent.get(key)
    if seen is not None:
        if seen['path'] != request.path or seen['body'] != body:
            return json_response({'error': {'type': 'idempotency_error', 'message': 'Keys for idempotent requests can only be used with the same parameters they were first used with.'}}, status=400)
        return web.Response(status=seen['status'], body=seen['response'], content_type='application/json', headers={'Idempotent-Replayed': 'true'})
    if key in in_progress:
        return json_response({'error': {'type': 'invalid_request_error', 'code': 'idempotency_key_in_use', 'message': 'There is currently another in-progress request using this Idempotent Key (that probably means you submitted twice, and the other request is still going through): %s. Please try again later.' % key}}, status=409)
    in_progress.add(key)
    try:
        try:
            response = await handler(request)
        except UserError as e:
            response = e.to_response()
        idempotent[key] = {'path': request.path, 'body': body, 'status': response.status, 'response': response.body}
        return response
    finally:
        in_progress.discard(key)


holds = []  # {'key', 'route', 'count'}: requests still to hold
held = {}  # api key -> [futures of the requests held now]


@web.middleware
async def hold_middleware(request, handler):
    # Innermost: a held request has its idempotency key registered and nothing done yet.
    if not request.path.startswith('/v1/'):
        return await handler(request)
    key = server.get_api_key(request)
    hold = next((h for h in holds if h['key'] == key and h['route'] == route_of(request) and h['count'] > 0), None)
    if hold is not None:
        hold['count'] -= 1
        release = asyncio.get_running_loop().create_future()
        held.setdefault(key, []).append(release)
        try:
            await release
        finally:
            held[key] = [f for f in held.get(key, []) if f is not release]
    return await handler(request)


async def config_holds(request):
    data = await request.json()
    if not data.get('key') or not data.get('route'):
        return json_response({'error': {'message': 'key and route: the API key and the route to hold are required'}}, status=400)
    holds.append({'key': data['key'], 'route': data['route'], 'count': int(data.get('count', 1))})
    return web.Response()


async def config_holds_release(request):
    key = (await request.json()).get('key')
    holds[:] = [h for h in holds if h['key'] != key]
    for f in held.get(key, []):
        if not f.done():
            f.set_result(None)
    return web.Response()


async def config_holds_now(request):
    return json_response({'held': len(held.get(request.query.get('key'), []))})


def _list_invoice_payments(payment=None, limit=None, **kwargs):
    # Stripe's invoice payments (API 2025-03-31 on), by payment intent: what a charge paid.
    pi = (payment or {}).get('payment_intent')
    found = [i for i in Invoice._api_list_all(None, limit=99)._list if pi and i.payment_intent == pi]
    return [{'id': 'inpay_' + i.id[3:], 'object': 'invoice_payment', 'invoice': i.id,
             'payment': {'type': 'payment_intent', 'payment_intent': pi}, 'amount_paid': i.amount_paid,
             'status': 'paid' if i.status == 'paid' else 'open'} for i in found]


async def invoice_payments(request):
    data = server.unflatten_data(request.query)
    items = _list_invoice_payments(**data)
    return json_response({'object': 'list', 'data': items, 'has_more': False, 'url': '/v1/invoice_payments'})


async def config_faults(request):
    data = await request.json()
    if not data.get('key'):
        return json_response({'error': {'message': 'key: the API key the fault applies to is required'}}, status=400)
    faults.append({'key': data['key'], 'status': int(data['status']), 'count': int(data['count']), 'when': data.get('when', 'before')})
    return web.Response()


async def config_faults_clear(request):
    key = request.query.get('key')
    faults[:] = [f for f in faults if f['key'] != key]
    return web.Response()


async def config_faults_left(request):
    key = request.query.get('key')
    mine = [f for f in faults if f['key'] == key and f['count'] > 0]
    return json_response({'count': sum(f['count'] for f in mine), 'queue': mine})


async def config_requests(request):
    return json_response(requests)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument('--port', type=int, required=True)
    args = parser.parse_args()
    app = server.app
    # localstripe registered its pay and void handlers at import: point those routes at ours.
    overrides = {'/v1/invoices/{id}/pay': Invoice._api_pay_invoice, '/v1/invoices/{id}/void': Invoice._api_void_invoice}
    for resource in app.router.resources():
        path = resource.canonical
        if path in overrides:
            for route in resource:
                if route.method == 'POST':
                    route._handler = server.api_extra(overrides.pop(path), path)
    assert not overrides, 'localstripe routes not found: %s' % list(overrides)
    app.router.add_post('/v1/invoices/{id}/finalize', server.api_extra(_finalize_invoice, '/v1/invoices/{id}/finalize'))
    app.router.add_get('/v1/invoice_payments', invoice_payments)
    app.router.add_post('/_config/faults', config_faults)
    app.router.add_get('/_config/requests', config_requests)
    app.router.add_get('/_config/faults', config_faults_left)
    app.router.add_delete('/_config/faults', config_faults_clear)
    app.router.add_post('/_config/holds', config_holds)
    app.router.add_post('/_config/holds/release', config_holds_release)
    app.router.add_get('/_config/holds', config_holds_now)
    app.middlewares.insert(0, fault_middleware)
    app.middlewares.append(idempotency_middleware)
    app.middlewares.append(hold_middleware)
    web.run_app(app, host='127.0.0.1', port=args.port, access_log=None, shutdown_timeout=0.5, print=lambda *a: print('localstripe ready on port %d' % args.port, flush=True))


if __name__ == '__main__':
    main()
