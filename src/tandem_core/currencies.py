"""ISO 4217 active alphabetic codes and their minor units.

Why a table in code: validation must not depend on the host's locale data or a network lookup, and the
minor unit decides how many fraction digits an amount may carry (USD 2, JPY 0, BHD 3). Funds and
precious-metal codes (XAU, XDR, ...) have no minor unit and are not accepted for transfers.
"""

from types import MappingProxyType

_MINOR_UNITS: dict[str, int] = {
    # three decimals
    **dict.fromkeys(["BHD", "IQD", "JOD", "KWD", "LYD", "OMR", "TND"], 3),
    # no decimals
    **dict.fromkeys(
        [
            "BIF", "CLP", "DJF", "GNF", "ISK", "JPY", "KMF", "KRW", "PYG", "RWF", "UGX", "UYI", "VND",
            "VUV", "XAF", "XOF", "XPF",
        ],
        0,
    ),
    # four decimals
    **dict.fromkeys(["CLF", "UYW"], 4),
    # two decimals
    **dict.fromkeys(
        [
            "AED", "AFN", "ALL", "AMD", "AOA", "ARS", "AUD", "AWG", "AZN", "BAM", "BBD", "BDT",
            "BMD", "BND", "BOB", "BOV", "BRL", "BSD", "BTN", "BWP", "BYN", "BZD", "CAD", "CDF", "CHE",
            "CHF", "CHW", "CNY", "COP", "COU", "CRC", "CUP", "CVE", "CZK", "DKK", "DOP", "DZD",
            "EGP", "ERN", "ETB", "EUR", "FJD", "FKP", "GBP", "GEL", "GHS", "GIP", "GMD", "GTQ", "GYD",
            "HKD", "HNL", "HTG", "HUF", "IDR", "ILS", "INR", "IRR", "JMD", "KES", "KGS", "KHR",
            "KPW", "KYD", "KZT", "LAK", "LBP", "LKR", "LRD", "LSL", "MAD", "MDL", "MGA", "MKD",
            "MMK", "MNT", "MOP", "MRU", "MUR", "MVR", "MWK", "MXN", "MXV", "MYR", "MZN", "NAD", "NGN",
            "NIO", "NOK", "NPR", "NZD", "PAB", "PEN", "PGK", "PHP", "PKR", "PLN", "QAR", "RON", "RSD",
            "RUB", "SAR", "SBD", "SCR", "SDG", "SEK", "SGD", "SHP", "SLE", "SOS", "SRD", "SSP", "STN",
            "SVC", "SYP", "SZL", "THB", "TJS", "TMT", "TOP", "TRY", "TTD", "TWD", "TZS", "UAH", "USD",
            "USN", "UZS", "VED", "VES", "WST", "XCD", "XCG", "YER", "ZAR", "ZMW", "ZWG",
        ],
        2,
    ),
}  # fmt: skip

MINOR_UNITS = MappingProxyType(_MINOR_UNITS)


def minor_unit(currency: str) -> int | None:
    """Fraction digits of an ISO 4217 currency, or None when the code is not an active currency."""
    return MINOR_UNITS.get(currency)
