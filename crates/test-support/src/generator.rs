//! Deterministic generator of example intents for the sample ruleset in `rules/`.
//!
//! ```text
//! cargo run --release --example gen_intents -- [--count N] [--seed S] [--accounts A] [--valid-only]
//! ```
//!
//! Prints `N` lines of JSON (one intent per line) to stdout. The same arguments always give the
//! same output: the randomness is a small xorshift PRNG, no external crates.
//!
//! The stream is a realistic mix from several agents (payments, payouts, procurement, treasury,
//! support and deploy agents) over `A` accounts, starting at 2026-11-28T00:00:00Z with event
//! times that grow by 0 to 60 seconds per line. On top of the ordinary traffic, scripted episodes
//! make every rule of the sample ruleset fire at least once in the first 300 lines (and keep
//! recurring now and then in longer streams): an account bursting transfers, an agent fanning out
//! to many payees, a support bot exporting in bulk, a production deploy without a change request,
//! a payment to a sanctioned country, a transfer above the hard limit, and so on.
//!
//! Unless `--valid-only` is given, 2% of the lines are invalid on purpose (six in every 300: broken
//! JSON, a missing `created_at`, an unknown field, a negative amount, an unknown currency `XYZ`,
//! an amount with an exponent), so the dead-letter output shows something, and two lines in every
//! 300 repeat a recent line exactly (same `intent_id`) so duplicates show. With `--valid-only` every line is a valid intent
//! (duplicates included: they are valid), which is what benchmarks want.
//!
//! All content is ASCII.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fmt::Write as _;
use std::io::{self, BufWriter, Write};
use std::process::ExitCode;

/// 2026-11-28T00:00:00Z in seconds since the Unix epoch.
const START: i64 = 1_795_824_000;

/// Lines per block: the scripted episodes are laid out in the first block, duplicates repeat
/// in every block.
const BLOCK: u64 = 300;

const USAGE: &str = "\
gen_intents: print deterministic example intents as JSON lines

usage: gen_intents [--count N] [--seed S] [--accounts A] [--valid-only]

  --count N      number of lines to print (default 300)
  --seed S       PRNG seed; the same seed gives the same output (default 42)
  --accounts A   number of accounts acct-0001 .. (default 40, 4 to 1000000)
  --valid-only   print only valid intents (no invalid lines), e.g. for benchmarks
  -h, --help     print this help
";

// ------------------------------------------------------------------------------------------
// PRNG

/// xorshift64* seeded through splitmix64 (so that any seed, 0 included, works).
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        Rng(if z == 0 { 0x2545_F491_4F6C_DD1D } else { z })
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..n` (`n > 0`).
    fn below(&mut self, n: u64) -> u64 {
        ((self.next() >> 32) * n) >> 32
    }

    /// Uniform in `lo..=hi`.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }

    /// True with probability `pct` percent.
    fn pct(&mut self, pct: u64) -> bool {
        self.below(100) < pct
    }

    /// True with probability `n` per mille.
    fn permille(&mut self, n: u64) -> bool {
        self.below(1000) < n
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

// ------------------------------------------------------------------------------------------
// Counterparties

// The counterparty pool is cp-0001 ..= cp-0560.
/// cp-0001 .. cp-0003 are on `lists.trusted_payees`.
const TRUSTED: [u32; 3] = [1, 2, 3];
/// Counterparties in countries on `lists.sanctioned_countries`.
const SANCTIONED: [(u32, &str); 4] = [(13, "IR"), (66, "KP"), (313, "SY"), (466, "CU")];
/// Counterparties in countries on `lists.review_countries`.
const REVIEW: [(u32, &str); 4] = [(27, "KY"), (88, "PA"), (144, "VG"), (512, "MM")];
/// Vendors the procurement agent buys from: cp-0501 .. cp-0560.
const VENDORS: (u32, u32) = (501, 560);

const COUNTRIES: [&str; 20] = [
    "DE", "DE", "DE", "FR", "FR", "NL", "NL", "ES", "IT", "BE", "AT", "IE", "PT", "PL", "GB", "GB",
    "US", "US", "CH", "SE",
];
const NAME_A: [&str; 16] = [
    "Alpine",
    "Baltic",
    "Cobalt",
    "Delta",
    "Evergreen",
    "Falcon",
    "Granite",
    "Harbor",
    "Iris",
    "Juniper",
    "Kestrel",
    "Lumen",
    "Meridian",
    "Northwind",
    "Orchid",
    "Pioneer",
];
const NAME_B: [&str; 12] = [
    "Trading",
    "Logistics",
    "Supplies",
    "Consulting",
    "Foods",
    "Systems",
    "Media",
    "Energy",
    "Textiles",
    "Labs",
    "Services",
    "Retail",
];

/// A company-form suffix that fits the country.
fn name_suffix(country: &str, h: u32) -> &'static str {
    let pick = |a: &'static str, b: &'static str| if h & 1 == 0 { a } else { b };
    match country {
        "DE" | "AT" => pick("GmbH", "AG"),
        "CH" => pick("AG", "SA"),
        "FR" => pick("SARL", "SAS"),
        "NL" | "BE" => "B.V.",
        "ES" => "S.L.",
        "IT" => "S.p.A.",
        "PT" => "Lda",
        "PL" => "Sp. z o.o.",
        "SE" => "AB",
        "US" => pick("Inc.", "LLC"),
        _ => "Ltd",
    }
}

fn cp_country(i: u32) -> &'static str {
    if let Some(&(_, c)) = SANCTIONED.iter().find(|(n, _)| *n == i) {
        return c;
    }
    if let Some(&(_, c)) = REVIEW.iter().find(|(n, _)| *n == i) {
        return c;
    }
    match i {
        1 => "DE",
        2 => "FR",
        3 => "NL",
        _ => COUNTRIES[(i.wrapping_mul(2_654_435_761) >> 7) as usize % COUNTRIES.len()],
    }
}

/// Whether `i` is an ordinary counterparty (not trusted, sanctioned or on the review list).
fn cp_plain(i: u32) -> bool {
    !TRUSTED.contains(&i)
        && !SANCTIONED.iter().any(|(n, _)| *n == i)
        && !REVIEW.iter().any(|(n, _)| *n == i)
}

/// A random ordinary counterparty of the general pool (not a vendor).
fn plain_cp(rng: &mut Rng) -> u32 {
    loop {
        let i = rng.range(4, VENDORS.0 as u64 - 1) as u32;
        if cp_plain(i) {
            return i;
        }
    }
}

/// The `k`-th usual payee (0..4) of account `a` (1-based): ordinary counterparties.
fn usual_payee(a: u32, k: u32) -> u32 {
    let mut i = 4 + (a.wrapping_mul(37) + k.wrapping_mul(101)) % (VENDORS.0 - 4);
    while !cp_plain(i) {
        i += 1;
    }
    i
}

fn write_cp(s: &mut String, i: u32) {
    let h = i.wrapping_mul(2_246_822_519);
    let country = cp_country(i);
    let _ = write!(s, r#","counterparty":{{"id":"cp-{i:04}","name":"#);
    let name = format!(
        "{} {} {}",
        NAME_A[(h >> 3) as usize % NAME_A.len()],
        NAME_B[(h >> 9) as usize % NAME_B.len()],
        name_suffix(country, h >> 15)
    );
    write_str(s, &name);
    let _ = write!(s, r#","country":"{country}""#);
    if h & 0x30 != 0 {
        // A made-up IBAN-like account reference.
        let _ = write!(
            s,
            r#","account":"{country}{:02}RGTEST{:010}""#,
            h % 97,
            (h as u64 * 7919) % 10_000_000_000
        );
    }
    s.push('}');
}

// ------------------------------------------------------------------------------------------
// JSON and time formatting

/// Writes `v` as a JSON string (quotes and escapes included).
fn write_str(s: &mut String, v: &str) {
    s.push('"');
    for c in v.chars() {
        match c {
            '"' => s.push_str("\\\""),
            '\\' => s.push_str("\\\\"),
            '\n' => s.push_str("\\n"),
            '\r' => s.push_str("\\r"),
            '\t' => s.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(s, "\\u{:04x}", c as u32);
            }
            c => s.push(c),
        }
    }
    s.push('"');
}

/// RFC 3339 UTC timestamp (`2026-11-28T00:00:00Z`) of `secs` since the Unix epoch.
fn write_time(s: &mut String, secs: i64) {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let _ = write!(
        s,
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    );
}

// ------------------------------------------------------------------------------------------
// Intents

#[derive(Clone, Copy, PartialEq)]
enum Cur {
    Eur,
    Usd,
    Gbp,
    Chf,
    Jpy,
}

impl Cur {
    fn code(self) -> &'static str {
        match self {
            Cur::Eur => "EUR",
            Cur::Usd => "USD",
            Cur::Gbp => "GBP",
            Cur::Chf => "CHF",
            Cur::Jpy => "JPY",
        }
    }

    /// Units of this currency per EUR, in percent (roughly the inverse of the [fx] rates).
    fn per_eur_pct(self) -> u64 {
        match self {
            Cur::Eur => 100,
            Cur::Usd => 109,
            Cur::Gbp => 85,
            Cur::Chf => 95,
            Cur::Jpy => 16_400,
        }
    }
}

/// One intent to print. `amount` is in minor units (cents; whole yen for JPY).
struct Intent {
    agent: &'static str,
    account: u32,
    action: &'static str,
    amount: Option<(u64, Cur)>,
    cp: Option<u32>,
    /// Already formatted `"attributes":{...}` members (without braces), if any.
    attributes: Option<String>,
}

impl Intent {
    fn new(agent: &'static str, account: u32, action: &'static str) -> Intent {
        Intent {
            agent,
            account,
            action,
            amount: None,
            cp: None,
            attributes: None,
        }
    }

    fn eur(mut self, cents: u64) -> Intent {
        self.amount = Some((cents, Cur::Eur));
        self
    }

    fn to(mut self, cp: u32) -> Intent {
        self.cp = Some(cp);
        self
    }
}

/// An amount of about `eur_cents` EUR in currency `cur`, in that currency's minor units.
fn convert(eur_cents: u64, cur: Cur) -> u64 {
    let minor = eur_cents * cur.per_eur_pct() / 100;
    if cur == Cur::Jpy {
        (minor / 100).max(1)
    } else {
        minor
    }
}

/// A currency for an ordinary payment: mostly EUR.
fn pick_currency(rng: &mut Rng) -> Cur {
    match rng.below(100) {
        0..=79 => Cur::Eur,
        80..=88 => Cur::Usd,
        89..=94 => Cur::Gbp,
        95..=97 => Cur::Chf,
        _ => Cur::Jpy,
    }
}

/// Random amount in EUR cents in `lo..=hi` whole euros; often rounded like people do.
fn euros(rng: &mut Rng, lo: u64, hi: u64) -> u64 {
    let cents = rng.range(lo * 100, hi * 100);
    match rng.below(10) {
        0..=5 => cents,
        6..=8 => cents / 100 * 100,
        _ => (cents / 5000 * 5000).max(lo * 100),
    }
}

/// Formats `amount` (minor units) as a decimal string.
fn write_amount(s: &mut String, minor: u64, cur: Cur) {
    if cur == Cur::Jpy {
        let _ = write!(s, "{minor}");
    } else {
        let _ = write!(s, "{}.{:02}", minor / 100, minor % 100);
    }
}

/// How to break a line on purpose.
#[derive(Clone, Copy)]
enum Broken {
    TruncatedJson,
    MissingField,
    UnknownField,
    NegativeAmount,
    UnknownCurrency,
    ExponentAmount,
}

/// Formats one intent as a JSON line (without the newline) into `s`.
fn write_intent(s: &mut String, id: u64, time: i64, it: &Intent, broken: Option<Broken>) {
    s.clear();
    let _ = write!(s, r#"{{"intent_id":"i-{id:07}","agent_id":"{}""#, it.agent);
    let _ = write!(
        s,
        r#","account_id":"acct-{:04}","action":"{}""#,
        it.account, it.action
    );
    if let Some((minor, cur)) = it.amount {
        s.push_str(r#","amount":"#);
        match broken {
            Some(Broken::NegativeAmount) => {
                s.push_str("\"-");
                write_amount(s, minor, cur);
                s.push('"');
            }
            Some(Broken::ExponentAmount) => {
                let _ = write!(s, "\"{}e2\"", (minor / 10_000).max(1));
            }
            _ => {
                s.push('"');
                write_amount(s, minor, cur);
                s.push('"');
            }
        }
        let code = if matches!(broken, Some(Broken::UnknownCurrency)) {
            "XYZ"
        } else {
            cur.code()
        };
        let _ = write!(s, r#","currency":"{code}""#);
    }
    if let Some(cp) = it.cp {
        write_cp(s, cp);
    }
    if !matches!(broken, Some(Broken::MissingField)) {
        s.push_str(r#","created_at":""#);
        write_time(s, time);
        s.push('"');
    }
    if let Some(attrs) = &it.attributes {
        let _ = write!(s, r#","attributes":{{{attrs}}}"#);
    }
    if matches!(broken, Some(Broken::UnknownField)) {
        s.push_str(r#","priority":"high""#);
    }
    s.push('}');
    if matches!(broken, Some(Broken::TruncatedJson)) {
        let cut = s.len() * 2 / 3;
        s.truncate(cut);
    }
}

// ------------------------------------------------------------------------------------------
// Ordinary traffic

struct World {
    accounts: u32,
}

impl World {
    fn account(&self, rng: &mut Rng) -> u32 {
        // acct-0001 .. acct-0003 are the treasury's own accounts.
        rng.range(4, self.accounts as u64) as u32
    }

    /// One intent of the ordinary mix.
    fn ordinary(&self, rng: &mut Rng, change_seq: &mut u32) -> Intent {
        match rng.below(100) {
            0..=33 => self.payments_bot(rng),
            34..=57 => self.payout(rng),
            58..=65 => self.procurement(rng),
            66..=73 => self.treasury(rng),
            74..=95 => self.support(rng),
            _ => self.deploy(rng, change_seq),
        }
    }

    fn payments_bot(&self, rng: &mut Rng) -> Intent {
        let account = self.account(rng);
        let action = if rng.pct(60) { "transfer" } else { "payment" };
        let cp = if rng.pct(85) {
            usual_payee(account, rng.below(4) as u32)
        } else if rng.pct(3) {
            // Now and then a payment to the review list (never a sanctioned country: those
            // are scripted).
            REVIEW[rng.below(REVIEW.len() as u64) as usize].0
        } else {
            plain_cp(rng)
        };
        let eur = match rng.below(1000) {
            0..=849 => euros(rng, 5, 300),
            850..=969 => euros(rng, 300, 1_200),
            970..=996 => euros(rng, 1_200, 5_000),
            _ => euros(rng, 10_001, 30_000),
        };
        let cur = pick_currency(rng);
        let mut it = Intent::new("payments-bot", account, action).to(cp);
        it.amount = Some((convert(eur, cur), cur));
        it
    }

    fn payout(&self, rng: &mut Rng) -> Intent {
        let account = self.account(rng);
        Intent::new("payouts-agent", account, "payout")
            .to(plain_cp(rng))
            .eur(euros(rng, 10, 800))
    }

    fn procurement(&self, rng: &mut Rng) -> Intent {
        let vendor = rng.range(VENDORS.0 as u64, VENDORS.1 as u64) as u32;
        let eur = if rng.permille(30) {
            euros(rng, 5_001, 20_000)
        } else {
            euros(rng, 20, 2_500)
        };
        let cur = if rng.pct(85) { Cur::Eur } else { Cur::Usd };
        let mut it = Intent::new("procurement-bot-1", self.account(rng), "purchase").to(vendor);
        it.amount = Some((convert(eur, cur), cur));
        it
    }

    fn treasury(&self, rng: &mut Rng) -> Intent {
        let account = rng.range(1, 3) as u32;
        let cp = if rng.pct(50) {
            *rng.pick(&TRUSTED)
        } else {
            usual_payee(account, rng.below(2) as u32)
        };
        Intent::new("treasury-agent", account, "transfer")
            .to(cp)
            .eur(euros(rng, 5_000, 60_000))
    }

    fn support(&self, rng: &mut Rng) -> Intent {
        let account = self.account(rng);
        if rng.pct(90) {
            return Intent::new("support-bot-eu", account, "refund")
                .to(plain_cp(rng))
                .eur(euros(rng, 5, 250));
        }
        let records = if rng.pct(95) {
            rng.range(1, 900)
        } else {
            rng.range(1_001, 50_000)
        };
        let mut it = Intent::new("support-bot-eu", account, "export");
        it.attributes = Some(export_attrs(rng, records));
        it
    }

    fn deploy(&self, rng: &mut Rng, change_seq: &mut u32) -> Intent {
        let production = rng.pct(40);
        let with_change = !production || rng.pct(95);
        deploy_intent(rng, "deploy-agent", production, with_change, change_seq)
    }
}

fn export_attrs(rng: &mut Rng, records: u64) -> String {
    let dataset = rng.pick(&["customers", "tickets", "orders", "invoices"]);
    let format = rng.pick(&["csv", "json", "parquet"]);
    format!(r#""record_count":{records},"dataset":"{dataset}","format":"{format}""#)
}

fn deploy_intent(
    rng: &mut Rng,
    agent: &'static str,
    production: bool,
    with_change: bool,
    change_seq: &mut u32,
) -> Intent {
    let service = rng.pick(&[
        "ledger-api",
        "payments-gateway",
        "risk-dashboard",
        "notifier",
    ]);
    let env = if production { "production" } else { "staging" };
    let mut attrs = format!(
        r#""environment":"{env}","service":"{service}","version":"1.{}.{}""#,
        rng.below(40),
        rng.below(10)
    );
    if with_change {
        *change_seq += 1;
        let _ = write!(attrs, r#","change_request":"CR-{}""#, 1000 + *change_seq);
    }
    let mut it = Intent::new(agent, 1, "deploy");
    it.attributes = Some(attrs);
    it
}

// ------------------------------------------------------------------------------------------
// Scripted episodes

#[derive(Clone, Copy, Debug)]
enum Episode {
    /// One account sends 13 transfers within minutes (acct-transfer-velocity).
    TransferBurst,
    /// The payouts agent pays 24 different payees from one account within minutes
    /// (agent-fan-out, new-counterparty, agent-burst).
    PayoutFanOut,
    /// The support bot exports 7 times within half an hour (export-velocity).
    ExportBurst,
    /// Four large treasury transfers from one account (large-transfer, acct-daily-outflow,
    /// agent-daily-outflow with the treasury's ordinary traffic).
    TreasuryRun,
    /// A transfer above the hard limit (transfer-hard-limit).
    HugeTransfer,
    /// A payment to a sanctioned country (sanctioned-country).
    Sanctioned,
    /// A small transfer, then one over 10 times as large (amount-spike).
    Spike,
    /// A production deploy without a change request (prod-deploy-without-change).
    DeployNoChange,
    /// A deploy proposed by an agent that is not a deploy agent (deploy-by-non-deploy-agent).
    RogueDeploy,
    /// A support bot exporting many records (support-bulk-export).
    BulkExport,
    /// A large purchase by the procurement agent, in JPY or USD (procurement-large-purchase).
    BigPurchase,
    /// A payment to a review-list country (review-country).
    ReviewCountry,
    /// A large transfer to a trusted payee (trusted-payee overriding large-transfer).
    TrustedLarge,
}

impl Episode {
    const ALL: [Episode; 13] = [
        Episode::TransferBurst,
        Episode::PayoutFanOut,
        Episode::ExportBurst,
        Episode::TreasuryRun,
        Episode::HugeTransfer,
        Episode::Sanctioned,
        Episode::Spike,
        Episode::DeployNoChange,
        Episode::RogueDeploy,
        Episode::BulkExport,
        Episode::BigPurchase,
        Episode::ReviewCountry,
        Episode::TrustedLarge,
    ];

    /// Where in the first block of 300 lines the episode starts.
    fn first_line(self) -> u64 {
        match self {
            Episode::TransferBurst => 40,
            Episode::PayoutFanOut => 150,
            Episode::ExportBurst => 90,
            Episode::TreasuryRun => 20,
            Episode::HugeTransfer => 200,
            Episode::Sanctioned => 120,
            Episode::Spike => 230,
            Episode::DeployNoChange => 60,
            Episode::RogueDeploy => 250,
            Episode::BulkExport => 30,
            Episode::BigPurchase => 110,
            Episode::ReviewCountry => 185,
            Episode::TrustedLarge => 270,
        }
    }

    /// Number of steps, and the distance in lines between two steps.
    fn shape(self) -> (u32, u64) {
        match self {
            Episode::TransferBurst => (13, 3),
            Episode::PayoutFanOut => (24, 1),
            Episode::ExportBurst => (7, 5),
            Episode::TreasuryRun => (4, 6),
            Episode::Spike => (2, 12),
            _ => (1, 1),
        }
    }

    /// Whether the lines of this episode come fast (0 to 8 s apart instead of 0 to 60 s).
    fn fast(self) -> bool {
        matches!(self, Episode::PayoutFanOut)
    }
}

/// A running episode: its kind, its random parameters and which step comes next.
struct Running {
    episode: Episode,
    step: u32,
    account: u32,
    payees: Vec<u32>,
}

impl Running {
    fn start(episode: Episode, rng: &mut Rng, world: &World) -> Running {
        let account = world.account(rng);
        let mut payees = Vec::new();
        if let Episode::PayoutFanOut = episode {
            while payees.len() < 24 {
                let cp = plain_cp(rng);
                if !payees.contains(&cp) {
                    payees.push(cp);
                }
            }
        }
        Running {
            episode,
            step: 0,
            account,
            payees,
        }
    }

    /// The intent of the current step.
    fn intent(&self, rng: &mut Rng, change_seq: &mut u32, max_transfer: &[u64]) -> Intent {
        let a = self.account;
        match self.episode {
            Episode::TransferBurst => Intent::new("payments-bot", a, "transfer")
                .to(usual_payee(a, self.step % 4))
                .eur(euros(rng, 20, 400)),
            Episode::PayoutFanOut => Intent::new("payouts-agent", a, "payout")
                .to(self.payees[self.step as usize])
                .eur(euros(rng, 15, 300)),
            Episode::ExportBurst => {
                let mut it = Intent::new("support-bot-eu", a, "export");
                let records = rng.range(5, 400);
                it.attributes = Some(export_attrs(rng, records));
                it
            }
            Episode::TreasuryRun => {
                let acct = 1 + a % 3;
                Intent::new("treasury-agent", acct, "transfer")
                    .to(usual_payee(acct, 0))
                    .eur(euros(rng, 26_000, 40_000))
            }
            Episode::HugeTransfer => Intent::new("treasury-agent", 1 + a % 3, "transfer")
                .to(usual_payee(1 + a % 3, 1))
                .eur(euros(rng, 120_000, 400_000)),
            Episode::Sanctioned => {
                let (cp, _) = SANCTIONED[rng.below(SANCTIONED.len() as u64) as usize];
                Intent::new("payments-bot", a, "payment")
                    .to(cp)
                    .eur(euros(rng, 100, 3_000))
            }
            Episode::Spike => {
                let eur = if self.step == 0 {
                    euros(rng, 20, 90)
                } else {
                    // Over 10 times the account's largest transfer so far (1% margin for the
                    // rounding of the currency conversions), and at least 4000 EUR.
                    let floor = max_transfer[a as usize] * 101 / 10;
                    floor.max(400_000) + rng.range(100, 50_000)
                };
                Intent::new("payments-bot", a, "transfer")
                    .to(usual_payee(a, 0))
                    .eur(eur)
            }
            Episode::DeployNoChange => deploy_intent(rng, "deploy-agent", true, false, change_seq),
            Episode::RogueDeploy => {
                let production = rng.pct(50);
                deploy_intent(rng, "support-bot-eu", production, true, change_seq)
            }
            Episode::BulkExport => {
                let mut it = Intent::new("support-bot-eu", a, "export");
                let records = rng.range(2_000, 80_000);
                it.attributes = Some(export_attrs(rng, records));
                it
            }
            Episode::BigPurchase => {
                let vendor = rng.range(VENDORS.0 as u64, VENDORS.1 as u64) as u32;
                let mut it = Intent::new("procurement-bot-1", a, "purchase").to(vendor);
                // Invoiced in yen or dollars: the limit applies to the EUR value.
                let cur = if rng.pct(50) { Cur::Jpy } else { Cur::Usd };
                it.amount = Some((convert(euros(rng, 6_000, 25_000), cur), cur));
                it
            }
            Episode::ReviewCountry => {
                let (cp, _) = REVIEW[rng.below(REVIEW.len() as u64) as usize];
                Intent::new("payments-bot", a, "payment")
                    .to(cp)
                    .eur(euros(rng, 50, 900))
            }
            Episode::TrustedLarge => Intent::new("treasury-agent", 1 + a % 3, "transfer")
                .to(*rng.pick(&TRUSTED))
                .eur(euros(rng, 12_000, 45_000)),
        }
    }
}

// ------------------------------------------------------------------------------------------
// Main loop

/// What to generate (also used by `benches/decide.rs`).
pub struct Args {
    pub count: u64,
    pub seed: u64,
    pub accounts: u32,
    pub valid_only: bool,
}

fn parse_args() -> Result<Option<Args>, String> {
    let mut args = Args {
        count: 300,
        seed: 42,
        accounts: 40,
        valid_only: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n.to_owned(), Some(v.to_owned())),
            _ => (arg.clone(), None),
        };
        let mut value = |what: &str| -> Result<u64, String> {
            let v = match inline.clone() {
                Some(v) => v,
                None => it
                    .next()
                    .ok_or_else(|| format!("{name} needs a value ({what})"))?,
            };
            v.parse::<u64>()
                .map_err(|_| format!("{name} expects {what}, found `{v}`"))
        };
        match name.as_str() {
            "--count" => args.count = value("a number of lines")?,
            "--seed" => args.seed = value("an unsigned integer")?,
            "--accounts" => {
                let a = value("a number of accounts")?;
                if !(4..=1_000_000).contains(&a) {
                    return Err(format!(
                        "--accounts must be between 4 and 1000000, found {a}"
                    ));
                }
                args.accounts = a as u32;
            }
            "--valid-only" => args.valid_only = true,
            "-h" | "--help" => return Ok(None),
            other => return Err(format!("unknown argument `{other}`; see --help")),
        }
    }
    Ok(Some(args))
}

/// The `gen_intents` example: arguments from the command line, intents to standard output.
pub fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(Some(args)) => args,
        Ok(None) => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("gen_intents: {e}");
            return ExitCode::from(2);
        }
    };
    let stdout = io::stdout();
    let mut out = BufWriter::with_capacity(1 << 16, stdout.lock());
    match generate(&args, &mut out).and_then(|()| out.flush()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gen_intents: cannot write to stdout: {e}");
            ExitCode::FAILURE
        }
    }
}

pub fn generate(args: &Args, out: &mut impl Write) -> io::Result<()> {
    let mut rng = Rng::new(args.seed);
    let world = World {
        accounts: args.accounts,
    };
    // Scheduled episode steps: (line, sequence number, index into `running`).
    let mut queue: BinaryHeap<Reverse<(u64, u64, usize)>> = BinaryHeap::new();
    let mut running: Vec<Running> = Vec::new();
    let mut seq = 0u64;
    // In a stream shorter than one block the episodes are squeezed in proportionally.
    let first_block = args.count.min(BLOCK);
    for episode in Episode::ALL {
        let line = episode.first_line() * first_block / BLOCK;
        running.push(Running::start(episode, &mut rng, &world));
        queue.push(Reverse((line, seq, running.len() - 1)));
        seq += 1;
    }

    let mut time = START;
    let mut next_id = 1u64;
    let mut change_seq = 0u32;
    // The largest transfer of each account so far, in EUR cents (for the spike episode).
    let mut max_transfer = vec![0u64; args.accounts as usize + 1];
    let mut line = String::with_capacity(512);
    // The last valid lines (a ring), to repeat exactly as duplicates.
    const RECENT: usize = 32;
    let mut recent: Vec<String> = Vec::with_capacity(RECENT);

    for n in 0..args.count {
        let block_pos = n % BLOCK;
        // Two exact duplicates of an earlier line in every block.
        if (block_pos == 137 || block_pos == 263) && !recent.is_empty() {
            let dup = &recent[rng.below(recent.len() as u64) as usize];
            out.write_all(dup.as_bytes())?;
            out.write_all(b"\n")?;
            continue;
        }
        // 2% invalid lines: six in every block, one of each kind.
        let broken = match block_pos {
            17 => Some(Broken::TruncatedJson),
            71 => Some(Broken::MissingField),
            123 => Some(Broken::UnknownField),
            181 => Some(Broken::NegativeAmount),
            229 => Some(Broken::UnknownCurrency),
            283 => Some(Broken::ExponentAmount),
            _ => None,
        };
        if let (Some(kind), false) = (broken, args.valid_only) {
            let mut it = world.payments_bot(&mut rng);
            if let Some((_, cur)) = &mut it.amount {
                // Keep the broken lines in plain EUR so that each has exactly one fault.
                *cur = Cur::Eur;
            }
            time += rng.range(0, 60) as i64;
            write_intent(&mut line, next_id, time, &it, Some(kind));
            next_id += 1;
            out.write_all(line.as_bytes())?;
            out.write_all(b"\n")?;
            continue;
        }
        // A scripted episode step due now, if any, else ordinary traffic.
        let due = match queue.peek() {
            Some(Reverse((at, _, _))) if *at <= n => queue.pop().map(|Reverse((_, _, idx))| idx),
            _ => None,
        };
        let it = match due {
            Some(idx) => {
                let r = &mut running[idx];
                let it = r.intent(&mut rng, &mut change_seq, &max_transfer);
                time += if r.episode.fast() {
                    rng.range(0, 8)
                } else {
                    rng.range(0, 60)
                } as i64;
                r.step += 1;
                let (steps, gap) = r.episode.shape();
                if r.step < steps {
                    queue.push(Reverse((n + gap, seq, idx)));
                    seq += 1;
                }
                it
            }
            None => {
                // After the first block, new episodes start now and then.
                if n >= BLOCK && rng.permille(8) {
                    let episode = *rng.pick(&Episode::ALL);
                    running.push(Running::start(episode, &mut rng, &world));
                    queue.push(Reverse((n + 1, seq, running.len() - 1)));
                    seq += 1;
                }
                time += rng.range(0, 60) as i64;
                world.ordinary(&mut rng, &mut change_seq)
            }
        };
        if let (Some((minor, cur)), "transfer") = (it.amount, it.action) {
            let eur_cents = if cur == Cur::Jpy {
                minor * 10_000
            } else {
                minor * 100
            } / cur.per_eur_pct();
            let max = &mut max_transfer[it.account as usize];
            *max = (*max).max(eur_cents);
        }
        write_intent(&mut line, next_id, time, &it, None);
        next_id += 1;
        out.write_all(line.as_bytes())?;
        out.write_all(b"\n")?;
        if recent.len() < RECENT {
            recent.push(line.clone());
        } else {
            recent[next_id as usize % RECENT].clone_from(&line);
        }
        // Forget finished episodes now and then (keeps memory flat on huge runs).
        if running.len() > 64 && queue.is_empty() {
            running.clear();
        }
    }
    Ok(())
}
