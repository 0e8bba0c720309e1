//! The API document's patterns state exactly the rules the server
//! enforces: for thousands of strings (tricky ones and generated ones near
//! every limit), a pattern matches (as JSON Schema reads it: a regex
//! search, here with Python's `re`, the engine schemathesis generates
//! from) exactly when the domain's `parse` accepts the string.

use std::io::Write;
use std::process::{Command, Stdio};

use errata::domain::{patterns, Email, ErrorName, Username};
use serde_json::json;

/// Which of `cases` the pattern matches, by Python's `re.search`.
fn matches(pattern: &str, cases: &[String]) -> Vec<bool> {
    let script = "import json, re, sys\n\
                  job = json.load(sys.stdin)\n\
                  p = re.compile(job['pattern'])\n\
                  print(json.dumps([p.search(s) is not None for s in job['cases']]))";
    let mut child = Command::new("python3")
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 runs");
    let job = json!({ "pattern": pattern, "cases": cases }).to_string();
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(job.as_bytes())
        .expect("the cases");
    let output = child.wait_with_output().expect("python3's answer");
    assert!(output.status.success(), "python3 failed");
    serde_json::from_slice(&output.stdout).expect("a list of booleans")
}

/// A small deterministic generator (no randomness between runs).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, below: usize) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 33) as usize) % below
    }
}

/// Strings built from characters that matter to the rules, of lengths
/// around `limit`.
fn generated(alphabet: &[char], limit: usize, count: usize, seed: u64) -> Vec<String> {
    let mut lcg = Lcg(seed);
    (0..count)
        .map(|_| {
            let len = match lcg.next(3) {
                0 => lcg.next(8),
                1 => limit.saturating_sub(3) + lcg.next(7),
                _ => lcg.next(limit + 8),
            };
            (0..len)
                .map(|_| alphabet[lcg.next(alphabet.len())])
                .collect()
        })
        .collect()
}

const SPACES: [char; 9] = [
    ' ', '\t', '\n', '\u{85}', '\u{a0}', '\u{2003}', '\u{3000}', '\u{feff}', '\u{200b}',
];

fn check(name: &str, pattern: &str, cases: Vec<String>, accepts: impl Fn(&str) -> bool) {
    let matched = matches(pattern, &cases);
    let mut accepted = 0;
    for (case, matched) in cases.iter().zip(matched) {
        let ok = accepts(case);
        accepted += usize::from(ok);
        assert_eq!(matched, ok, "{name}: {case:?} (pattern matches: {matched})");
    }
    // The cases exercise both sides.
    assert!(accepted >= 50, "{name}: only {accepted} accepted");
    assert!(cases.len() - accepted >= 50, "{name}: too few refused");
}

#[test]
fn the_email_pattern_is_the_email_rule() {
    let mut cases: Vec<String> = [
        "ana@example.com",
        " Ana@Example.COM ",
        "a@b.c",
        "a@b.",
        "a@.b",
        "a@b",
        "@b.c",
        "a@@b.c",
        "a@b@c.d",
        "a b@c.d",
        "a\u{1}@b.c",
        "a@b..c",
        "\u{feff}a@b.c",
        "a@b.c\n",
        "\u{2003}a@b.c\u{3000}",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    cases.push(format!("{}@b.cd", "a".repeat(249)));
    cases.push(format!("{}@b.cd", "a".repeat(250)));
    cases.push(format!("  {}@b.cd  ", "a".repeat(249)));
    let mut alphabet: Vec<char> = "ab.@@.\u{1}é".chars().collect();
    alphabet.extend(SPACES);
    cases.extend(generated(&alphabet, 12, 3000, 1));
    let long: Vec<char> = "aaaaaaaaaaa@.b".chars().collect();
    cases.extend(generated(&long, 254, 500, 2));
    // Addresses shaped local@domain.tld, from the same characters.
    let safe: Vec<char> = "ab.é+.é\u{1}@ ".chars().collect();
    let parts = generated(&safe, 3, 6000, 5);
    cases.extend(
        parts
            .chunks(3)
            .map(|p| format!("{}a@b{}.c{}", p[0], p[1], p[2])),
    );
    check("email", patterns::EMAIL, cases, |s| Email::parse(s).is_ok());
}

#[test]
fn the_username_pattern_is_the_username_rule() {
    let mut cases: Vec<String> = ["ana", "  ana ", "", "   ", "\u{feff}", "\u{1}", "a b"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    cases.push("x".repeat(64));
    cases.push("x".repeat(65));
    cases.push(format!("  {}  ", "é".repeat(64)));
    let mut alphabet: Vec<char> = "xé\u{1}".chars().collect();
    alphabet.extend(SPACES);
    cases.extend(generated(&alphabet, 64, 3000, 3));
    check("username", patterns::USERNAME, cases, |s| {
        Username::parse(s).is_ok()
    });
}

#[test]
fn the_error_name_pattern_is_the_error_name_rule() {
    let mut cases: Vec<String> = ["Grammar", "  Subject-Verb \t\n Agreement ", "", " \t "]
        .iter()
        .map(|s| s.to_string())
        .collect();
    cases.push(format!("  {}   {}  ", "a".repeat(31), "b".repeat(32)));
    cases.push(format!("{} {}", "a".repeat(32), "b".repeat(32)));
    cases.push("é".repeat(65));
    let mut alphabet: Vec<char> = "gé:{}".chars().collect();
    alphabet.extend(SPACES);
    alphabet.extend(SPACES);
    cases.extend(generated(&alphabet, 64, 3000, 4));
    check("error name", patterns::ERROR_NAME, cases, |s| {
        ErrorName::parse(s).is_ok()
    });
}
