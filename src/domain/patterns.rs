//! The input rules of [`Username`](super::Username),
//! [`Email`](super::Email) and [`ErrorName`](super::ErrorName) as regular
//! expressions (ECMA-262, as JSON Schema reads them), for the API document:
//! a string matches exactly when `parse` accepts it.
//!
//! Whitespace is Unicode's `White_Space` (what `str::trim` and
//! `split_whitespace` remove), spelled out because `\s` differs between
//! regex dialects.

/// Unicode `White_Space`, as the inside of a character class.
macro_rules! space {
    () => {
        r"\t-\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
    };
}

/// What may not appear in an e-mail address once trimmed: `@` (but the
/// one), whitespace and control characters.
macro_rules! not_in_email {
    () => {
        r"@\x00-\x20\x7f-\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
    };
}

/// Trimmed, 1 to 64 characters ([`MAX_USERNAME_CHARS`](super::learner::MAX_USERNAME_CHARS)).
pub const USERNAME: &str = concat!(
    "^[",
    space!(),
    "]*",
    "(?:[^",
    space!(),
    "]|[^",
    space!(),
    r"][\s\S]{0,62}[^",
    space!(),
    "])",
    "[",
    space!(),
    "]*$"
);

/// Trimmed, at most 254 characters
/// ([`MAX_EMAIL_CHARS`](super::learner::MAX_EMAIL_CHARS)): a local part,
/// one `@`, a domain with a dot neither first nor last; no whitespace or
/// control characters.
pub const EMAIL: &str = concat!(
    "^[",
    space!(),
    "]*",
    "(?=[^",
    space!(),
    "]{1,254}[",
    space!(),
    "]*$)",
    "[^",
    not_in_email!(),
    "]+@",
    "[^.",
    not_in_email!(),
    "][^",
    not_in_email!(),
    r"]*\.",
    "[^",
    not_in_email!(),
    "]*[^.",
    not_in_email!(),
    "]",
    "[",
    space!(),
    "]*$"
);

/// 1 to 64 characters ([`MAX_NAME_CHARS`](super::error_point::MAX_NAME_CHARS))
/// once trimmed and with each inner run of whitespace counted as one.
pub const ERROR_NAME: &str = concat!(
    "^[",
    space!(),
    "]*[^",
    space!(),
    "]",
    "(?:[^",
    space!(),
    "]|[",
    space!(),
    "]+(?=[^",
    space!(),
    "])){0,63}",
    "[",
    space!(),
    "]*$"
);
