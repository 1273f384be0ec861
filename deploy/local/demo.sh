#!/usr/bin/env bash
# The demo `make run` prints: a funded demo customer (idempotent: fixed request ids, so running it
# again replays the same outcomes) and ready-to-run signed curl calls for each Quadcode callback.
# Then the outbound side: the website opens the trading room through the operator API (the first
# time, the customer is registered at Quadcode, here the simulator), and the simulator's trading
# room plays a few options against the wallet's callbacks. Last, one exchange of 20 USDT into BTC
# through the operator API at Swapgate (here its simulator): a new exchange, with a new id, on
# every run (the USDT balance is funded once with 1000 USDT, enough for 50 runs).
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$SCRIPT_DIR/../.." && pwd)
WALLET_HOME=${WALLET_HOME:-$REPO/.run}
PYTHON=${PYTHON:-$REPO/.venv/bin/python}
export WALLET_ENV_FILE=${WALLET_ENV_FILE:-$WALLET_HOME/wallet.env}
EDGE=http://127.0.0.1:${WALLET_EDGE_PORT:-18080}
KEY=$WALLET_HOME/keys/quadcode-private.pem
OPERATOR_API=http://127.0.0.1:${WALLET_OPERATOR_API_PORT:-18083}
# The first admin key, made by `make run` with the bootstrap CLI (python -m operator_api keys create).
export WALLET_OPERATOR_CREDENTIALS=$WALLET_HOME/keys/operator-admin.json
SIMULATOR=http://127.0.0.1:${QUADCODE_SIM_PORT:-18090}
SWAPGATE=http://127.0.0.1:${SWAPGATE_SIM_PORT:-18091}
# /health, /ready and /metrics: on operational ports of their own, never on the public ones.
EDGE_OPS=http://127.0.0.1:${WALLET_EDGE_OPS_PORT:-18084}
PROJECTION_OPS=http://127.0.0.1:${WALLET_PROJECTION_OPS_PORT:-18085}
OPERATOR_API_OPS=http://127.0.0.1:${WALLET_OPERATOR_API_OPS_PORT:-18086}
LEDGER_OPS=http://127.0.0.1:${WALLET_LEDGER_PORT:-18082}
cli() { (cd "$REPO" && "$PYTHON" -m ledger.cli "$@"); }

# Every operator API request is signed with an operator API key (x-api-public-key,
# x-api-timestamp, x-api-signature), here by the Python client's one-request command.
operator_api() { (cd "$REPO" && "$PYTHON" -m operator_client request --status "$@"); }
# One operator write, shown as "METHOD PATH -> HTTP status body" on one line.
operator_write() {
    local answer
    answer=$(operator_api "$@")
    printf '  %s %s -> HTTP %s %s\n' "$1" "$2" "${answer##*$'\n'}" "${answer%$'\n'*}"
}

echo "== demo customer, through the operator API (signed with the admin key make run made; every"
echo "   write goes through ledger.commands and is idempotent by its requestId)"
operator_write POST /v1/customers '{"customerId":"demo-1","requestId":"demo-create"}'
operator_write POST /v1/customers/demo-1/balances '{"balanceId":"demo-1_USD","currency":"USD","requestId":"demo-open-usd"}'
operator_write POST /v1/customers/demo-1/balances '{"balanceId":"demo-1_BTC","currency":"BTC","requestId":"demo-open-btc"}'
operator_write POST /v1/customers/demo-1/balances/demo-1_USD/deposits '{"requestId":"demo-fund-usd","amount":"1000.00","comment":"demo funding"}'
operator_write POST /v1/customers/demo-1/balances/demo-1_BTC/deposits '{"requestId":"demo-fund-btc","amount":"0.50000000","comment":"demo funding"}'

TOKEN=$(cli sign-token --private-key "$KEY" --audience sandbox)
RID=demo-$(date +%s)
echo
echo "== Quadcode's callbacks, signed with the local stand-in for Quadcode's key (valid 10 min):"
cat <<CURL
curl -s $EDGE/v1/customers/demo-1/balances/demo-1_USD -H "Authorization: Bearer $TOKEN"

curl -s -X POST $EDGE/v1/customers/demo-1/balances/demo-1_USD/debit -H "Authorization: Bearer $TOKEN" \\
     -d '{"request_id":"$RID-d","amount":"25.00","currency_code":"USD","comment":"option opened"}'

curl -s -X POST $EDGE/v1/customers/demo-1/balances/demo-1_USD/credit -H "Authorization: Bearer $TOKEN" \\
     -d '{"request_id":"$RID-c","amount":"40.00","currency_code":"USD","comment":"option closed"}'
CURL
echo
echo "== operational routes (ports of their own; on $EDGE and $OPERATOR_API they are a 404):"
for ops in "edge $EDGE_OPS" "projection $PROJECTION_OPS" "ledger $LEDGER_OPS" "operator-api $OPERATOR_API_OPS"; do
    read -r name url <<<"$ops"
    printf '  %-13s curl -s %s/ready   -> %s\n' "$name" "$url" "$(curl -s "$url/ready" || echo unreachable)"
done
echo "  metrics:      curl -s $EDGE_OPS/metrics"
echo
echo "== one debit, right now:"
curl -s -w '  (HTTP %{http_code}, %{time_total}s)\n' -X POST "$EDGE/v1/customers/demo-1/balances/demo-1_USD/debit" \
    -H "Authorization: Bearer $TOKEN" \
    -d "{\"request_id\":\"$RID-now\",\"amount\":\"1.00\",\"currency_code\":\"USD\",\"comment\":\"demo\"}"
echo
echo "== statement:"
cli statement demo-1 demo-1_USD

echo
echo "== Quadcode: the website opens the trading room for demo-1 through the operator API"
echo "   (on the first visit Quadcode answers 404 and the customer is registered there first)"
ROOM_REQUEST='{"balance_id":"demo-1_USD","balance_currency_code":"USD","country_code":"DE","ip":"203.0.113.10","locale":"en_US","site_domain":"trade.example.com","email":"demo-1@example.com","first_name":"Demo"}'
echo "python -m operator_client request POST /v1/customers/demo-1/trading-room '$ROOM_REQUEST'"
ROOM=$(operator_api POST /v1/customers/demo-1/trading-room "$ROOM_REQUEST")
ROOM=${ROOM%$'\n'*}
echo "$ROOM"
URL=$(printf '%s' "$ROOM" | "$PYTHON" -c 'import json, sys; print(json.load(sys.stdin).get("url", ""))')
if [[ -z $URL ]]; then
    echo "demo: the trading room did not open (see $WALLET_HOME/logs/operator-api.log)" >&2
    exit 1
fi
echo
echo "iframe URL (opens once): $URL"

echo
echo "== balance before trading:"
cli show demo-1 demo-1_USD
echo
echo "== Quadcode's trading room plays 4 options of 5.00 USD against the wallet (simulator -> edge,"
echo "   Quadcode-signed JWTs; odd options win 1.80x; every attempt of every call is shown):"
(cd "$REPO" && "$PYTHON" -m simulators.quadcode trade --simulator-url "$SIMULATOR" \
    --customer-id demo-1 --balance-id demo-1_USD --currency USD --trades 4 --stake 5.00 --format text)
echo
echo "== balance after trading (4 x 5.00 staked, 2 x 9.00 paid out: 2.00 less):"
cli show demo-1 demo-1_USD

echo
echo "== Exchange: demo-1 exchanges 20.00 USDT into BTC through the operator API, at Swapgate"
echo "   (here the Swapgate simulator on $SWAPGATE; orders spend 1 s in each stage)"
operator_write POST /v1/customers/demo-1/balances '{"balanceId":"demo-1_USDT","currency":"USDT","requestId":"demo-open-usdt"}'
operator_write POST /v1/customers/demo-1/balances/demo-1_USDT/deposits '{"requestId":"demo-fund-usdt","amount":"1000.00","comment":"demo funding"}'
echo
echo "== balances before the exchange:"
cli statement demo-1 demo-1_USDT --limit 3
cli statement demo-1 demo-1_BTC --limit 3

# A new exchange on every run: the exchange id is its idempotency key (the same request again
# would answer with the same exchange as it stands).
EXCHANGE_ID=demo-ex-$(date +%Y%m%d-%H%M%S)
EXCHANGE_REQUEST="{\"exchange_id\":\"$EXCHANGE_ID\",\"source_balance_id\":\"demo-1_USDT\",\"target_balance_id\":\"demo-1_BTC\",\"amount\":\"20.00\",\"currency_code\":\"USDT\",\"target_currency_code\":\"BTC\"}"
echo
echo "python -m operator_client request POST /v1/customers/demo-1/exchanges '$EXCHANGE_REQUEST'"
# One field of an exchange (JSON on stdin).
field() { "$PYTHON" -c 'import json, sys; print(json.load(sys.stdin).get(sys.argv[1]) or "")' "$1"; }
ANSWER=$(operator_api POST /v1/customers/demo-1/exchanges "$EXCHANGE_REQUEST")
STATUS=${ANSWER##*$'\n'}
BODY=${ANSWER%$'\n'*}
if [[ $STATUS != 202 ]]; then
    echo "HTTP $STATUS $BODY"
    echo "demo: the exchange was not accepted (see $WALLET_HOME/logs/operator-api.log;" \
        "402 insufficient_funds: demo-1_USDT is spent, make reset starts afresh)" >&2
    exit 1
fi
echo "HTTP $STATUS: state $(printf '%s' "$BODY" | field state)"
echo "quote: $(printf '%s' "$BODY" | "$PYTHON" -c 'import json, sys; print(json.dumps(json.load(sys.stdin)["quote"]))')"

echo
echo "== the exchange's state, as the operator API reports it while the order runs:"
echo "python -m operator_client request GET /v1/customers/demo-1/exchanges/$EXCHANGE_ID"
LAST=""
for _ in $(seq 1 120); do
    ANSWER=$(operator_api GET "/v1/customers/demo-1/exchanges/$EXCHANGE_ID")
    BODY=${ANSWER%$'\n'*}
    STATE=$(printf '%s' "$BODY" | field state)
    if [[ $STATE != "$LAST" ]]; then
        echo "  $(date +%T) $STATE $(printf '%s' "$BODY" | field order_id)"
        LAST=$STATE
    fi
    case $STATE in settled | voided | refused | attention) break ;; esac
    sleep 0.5
done
echo
echo "exchange $EXCHANGE_ID:"
printf '%s' "$BODY" | "$PYTHON" -c '
import json, sys
x = json.load(sys.stdin)
print(json.dumps({k: x[k] for k in ("state", "order_id", "amount", "currency_code", "target_currency_code", "detail")}))
settlement = x.get("settlement") or {}
print("settlement:", json.dumps({k: v for k, v in settlement.items() if k != "exact"}))'
if [[ $STATE != settled ]]; then
    echo "demo: the exchange did not settle (state ${STATE:-unknown}; see" \
        "$WALLET_HOME/logs/operator-api.log and swapgate-sim.log)" >&2
    exit 1
fi
echo
echo "== balances after the exchange (20.00 USDT out; the BTC paid out in):"
cli statement demo-1 demo-1_USDT --limit 3
cli statement demo-1 demo-1_BTC --limit 3

echo
echo "== the trial balance per currency, through the operator API (customer balances plus every"
echo "   system account; each currency must sum to zero):"
echo "python -m operator_client request GET /v1/trial-balance"
(cd "$REPO" && "$PYTHON" -m operator_client request GET /v1/trial-balance 2>/dev/null) | "$PYTHON" -c '
import json, sys
for c in json.load(sys.stdin)["currencies"]:
    print("  {currency:5} customers {customers:>16}  total {total:>12}  balanced: {balanced}".format(**c))'

echo
echo "== downstream accounting: the reference consumer's books (python -m accounting), built from"
echo "   ledger.events alone; a trial balance of its general ledger, as of what it has booked:"
for _ in $(seq 1 50); do
    # Caught up when its lag gauge is zero on every partition.
    LAG=$(curl -s "http://127.0.0.1:${WALLET_ACCOUNTING_PORT:-18092}/metrics" |
        awk '/^accounting_lag_facts/ {s += $2} END {print s + 0}')
    [[ $LAG == 0 ]] && break
    sleep 0.2
done
(cd "$REPO" && "$PYTHON" -m accounting trial-balance)

echo
echo "== continuous reconciliation (python -m reconciler, every 10 s; its /ready, right now):"
curl -s "http://127.0.0.1:${WALLET_RECONCILER_PORT:-18093}/ready" | "$PYTHON" -c '
import json, sys
body = json.load(sys.stdin)
for name, ok in body["checks"].items():
    status = body["details"].get(name, {}).get("status", "")
    print("  {:14} {:9} {}".format(name, "ok" if ok else "MISMATCH", status))' || echo "  (reconciler unreachable)"

echo
echo "== proofs:"
echo "python -m operator_api audit verify   (the operator audit log's hash chain)"
(cd "$REPO" && "$PYTHON" -m operator_api audit verify) | sed 's/^/  /'
echo "python -m ledger.chain verify         (every journal entry's hash, chained per partition)"
(cd "$REPO" && "$PYTHON" -m ledger.chain verify) | sed 's/^/  /'
echo "python -m ledger.state_hash           (the ledger's canonical state hash; ledger.replay"
echo "                                      re-runs ledger.commands into a fresh database and must"
echo "                                      print the same one: see docs/replay.md)"
(cd "$REPO" && "$PYTHON" -m ledger.state_hash) | sed 's/^/  /'
