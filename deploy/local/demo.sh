#!/usr/bin/env bash
# The demo `make run` prints: a funded demo customer (idempotent: fixed request ids, so running it
# again replays the same outcomes) and ready-to-run signed curl calls for each Quadcode callback.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$SCRIPT_DIR/../.." && pwd)
WALLET_HOME=${WALLET_HOME:-$REPO/.run}
PYTHON=${PYTHON:-$REPO/.venv/bin/python}
export WALLET_ENV_FILE=${WALLET_ENV_FILE:-$WALLET_HOME/wallet.env}
EDGE=http://127.0.0.1:${WALLET_EDGE_PORT:-18080}
KEY=$WALLET_HOME/keys/quadcode-private.pem
cli() { (cd "$REPO" && "$PYTHON" -m ledger.cli "$@"); }

echo "== demo customer (through ledger.commands, like every write)"
cli create-customer demo-1 --request-id demo-create
cli open-balance demo-1 demo-1_USD USD --request-id demo-open-usd
cli open-balance demo-1 demo-1_BTC BTC --request-id demo-open-btc
cli deposit demo-1 demo-1_USD 1000.00 USD --request-id demo-fund-usd --comment "demo funding"
cli deposit demo-1 demo-1_BTC 0.50000000 BTC --request-id demo-fund-btc --comment "demo funding"

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
echo "== one debit, right now:"
curl -s -w '  (HTTP %{http_code}, %{time_total}s)\n' -X POST "$EDGE/v1/customers/demo-1/balances/demo-1_USD/debit" \
    -H "Authorization: Bearer $TOKEN" \
    -d "{\"request_id\":\"$RID-now\",\"amount\":\"1.00\",\"currency_code\":\"USD\",\"comment\":\"demo\"}"
echo
echo "== statement:"
cli statement demo-1 demo-1_USD
