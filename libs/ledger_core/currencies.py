"""The currency table: each currency's code and exponent (digits after the decimal point).

ISO 4217 for fiat (active codes; funds and precious-metal codes without a minor unit are left out)
plus the crypto assets the wallet supports. One place for these facts.
"""

from __future__ import annotations

_ISO_4217_EXPONENT_2 = (
    "AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BMD BND BOB BRL BSD BTN BWP BYN BZD "
    "CAD CDF CHF CNY COP CRC CUP CVE CZK DKK DOP DZD EGP ERN ETB EUR FJD FKP GBP GEL GHS GIP GMD "
    "GTQ GYD HKD HNL HTG HUF IDR ILS INR IRR JMD KES KGS KHR KPW KYD KZT LAK LBP LKR LRD LSL MAD "
    "MDL MGA MKD MMK MNT MOP MRU MUR MVR MWK MXN MYR MZN NAD NGN NIO NOK NPR NZD PAB PEN PGK PHP "
    "PKR PLN QAR RON RSD RUB SAR SBD SCR SDG SEK SGD SHP SLE SOS SRD SSP STN SVC SYP SZL THB TJS "
    "TMT TOP TRY TTD TWD TZS UAH USD UYU UZS VES WST XCD YER ZAR ZMW ZWG"
).split()
_ISO_4217_EXPONENT_0 = (
    "BIF CLP DJF GNF ISK JPY KMF KRW PYG RWF UGX UYI VND VUV XAF XOF XPF"
).split()
_ISO_4217_EXPONENT_3 = "BHD IQD JOD KWD LYD OMR TND".split()
_ISO_4217_EXPONENT_4 = "CLF UYW".split()

# Crypto assets: the exponent is the asset's smallest unit on its main network
# (satoshi for BTC, wei for ETH, 6 decimals for the dollar stablecoins' ERC-20/TRC-20 tokens).
_CRYPTO = {
    "BTC": 8,
    "ETH": 18,
    "USDT": 6,
    "USDC": 6,
    "LTC": 8,
    "TRX": 6,
    "XRP": 6,
    "SOL": 9,
    "DOGE": 8,
    "BNB": 18,
}

EXPONENTS: dict[str, int] = {
    **dict.fromkeys(_ISO_4217_EXPONENT_2, 2),
    **dict.fromkeys(_ISO_4217_EXPONENT_0, 0),
    **dict.fromkeys(_ISO_4217_EXPONENT_3, 3),
    **dict.fromkeys(_ISO_4217_EXPONENT_4, 4),
    **_CRYPTO,
}

CRYPTO_CODES = frozenset(_CRYPTO)


def exponent(code: str) -> int | None:
    """The exponent of ``code``, or None if the currency is not supported."""
    return EXPONENTS.get(code)
