//! ISO 4217 currency codes.

/// The active ISO 4217 alphabetic codes (list published by the ISO 4217 maintenance agency,
/// as of 2026), sorted, a line per first letter, one space between codes. Withdrawn codes
/// (`HRK`, `BGN`, `SLL`, `ANG`, `CUC`, `ZWL`) and the testing / no-currency codes `XTS` and
/// `XXX` are not accepted.
const CODES: &str = "\
    AED AFN ALL AMD AOA ARS AUD AWG AZN \
    BAM BBD BDT BHD BIF BMD BND BOB BOV BRL BSD BTN BWP BYN BZD \
    CAD CDF CHE CHF CHW CLF CLP CNY COP COU CRC CUP CVE CZK \
    DJF DKK DOP DZD \
    EGP ERN ETB EUR \
    FJD FKP \
    GBP GEL GHS GIP GMD GNF GTQ GYD \
    HKD HNL HTG HUF \
    IDR ILS INR IQD IRR ISK \
    JMD JOD JPY \
    KES KGS KHR KMF KPW KRW KWD KYD KZT \
    LAK LBP LKR LRD LSL LYD \
    MAD MDL MGA MKD MMK MNT MOP MRU MUR MVR MWK MXN MXV MYR MZN \
    NAD NGN NIO NOK NPR NZD \
    OMR \
    PAB PEN PGK PHP PKR PLN PYG \
    QAR \
    RON RSD RUB RWF \
    SAR SBD SCR SDG SEK SGD SHP SLE SOS SRD SSP STN SVC SYP SZL \
    THB TJS TMT TND TOP TRY TTD TWD TZS \
    UAH UGX USD USN UYI UYU UYW UZS \
    VED VES VND VUV \
    WST \
    XAF XAG XAU XBA XBB XBC XBD XCD XCG XDR XOF XPD XPF XPT XSU XUA \
    YER \
    ZAR ZMW ZWG";

/// One bit per three-letter code `AAA`..`ZZZ`, set for the codes in [`CODES`].
static ACTIVE: [u64; BITS.div_ceil(64)] = active();

const BITS: usize = 26 * 26 * 26;

/// The bit of a three-letter upper-case code.
const fn bit(code: &[u8]) -> usize {
    ((code[0] - b'A') as usize * 26 + (code[1] - b'A') as usize) * 26 + (code[2] - b'A') as usize
}

const fn active() -> [u64; BITS.div_ceil(64)] {
    let codes = CODES.as_bytes();
    let mut set = [0u64; BITS.div_ceil(64)];
    // Three capital letters a code, one space between: a list in any other form fails to
    // compile (a letter out of range in `bit`, or an index out of bounds here).
    let mut i = 0;
    while i < codes.len() {
        let b = bit(&[codes[i], codes[i + 1], codes[i + 2]]);
        set[b / 64] |= 1 << (b % 64);
        i += 4;
    }
    set
}

/// Whether `code` is an active ISO 4217 alphabetic currency code.
pub fn is_iso4217(code: &str) -> bool {
    let code = code.as_bytes();
    if code.len() != 3 || !code.iter().all(u8::is_ascii_uppercase) {
        return false;
    }
    let b = bit(code);
    ACTIVE[b / 64] & (1 << (b % 64)) != 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn codes() -> Vec<&'static str> {
        CODES.split(' ').collect()
    }

    #[test]
    fn codes_are_sorted_and_unique() {
        assert!(codes().windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn the_bit_set_holds_exactly_the_listed_codes() {
        let codes = codes();
        let mut accepted = 0;
        for a in b'A'..=b'Z' {
            for b in b'A'..=b'Z' {
                for c in b'A'..=b'Z' {
                    let code = String::from_utf8(vec![a, b, c]).unwrap();
                    let listed = codes.contains(&code.as_str());
                    assert_eq!(is_iso4217(&code), listed, "{code}");
                    accepted += usize::from(listed);
                }
            }
        }
        assert_eq!(accepted, codes.len());
    }

    #[test]
    fn known_and_unknown_codes() {
        for code in ["EUR", "USD", "GBP", "JPY", "CHF", "AED", "ZWG"] {
            assert!(is_iso4217(code), "{code}");
        }
        for code in ["XYZ", "eur", "EURO", "", "HRK", "XXX"] {
            assert!(!is_iso4217(code), "{code}");
        }
    }
}
