//! Clients: the people the Trading Platform registers.

use rusqlite::{params, Connection, OptionalExtension, Row};
use serde::Serialize;

use super::{now, unique_conflict, StoreError, StoreResult};
use crate::domain::{is_phone_char, ClientId, Email, KycStatus, MAX_PHONE_CHARS};

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Client {
    pub id: String,
    pub platform_client_id: Option<String>,
    pub email: String,
    pub first_name: String,
    pub last_name: String,
    pub phone: String,
    pub kyc_status: String,
    pub kyc_notes: String,
    pub created_at: String,
    pub updated_at: String,
}

/// The columns [`Client::from_row`] reads, in its order. Read by position: by name, every field
/// of every row would scan the statement's column names, on the writer's path of every lookup.
macro_rules! client_columns {
    () => {
        "id, platform_client_id, coalesce(email_as_sent, email), first_name, last_name, phone, kyc_status, kyc_notes,
         created_at, updated_at"
    };
}

impl Client {
    /// A row selected as `client_columns!`.
    fn from_row(r: &Row) -> rusqlite::Result<Client> {
        Ok(Client {
            id: r.get(0)?,
            platform_client_id: r.get(1)?,
            email: r.get(2)?,
            first_name: r.get(3)?,
            last_name: r.get(4)?,
            phone: r.get(5)?,
            kyc_status: r.get(6)?,
            kyc_notes: r.get(7)?,
            created_at: r.get(8)?,
            updated_at: r.get(9)?,
        })
    }

    pub fn client_id(&self) -> StoreResult<ClientId> {
        Ok(self.id.parse()?)
    }
}

/// Contact fields as registered or updated; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct Contact {
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub phone: Option<String>,
}

pub fn insert(conn: &Connection, email: &Email, platform_id: Option<&str>, contact: &Contact) -> StoreResult<Client> {
    let id = ClientId::new().to_string();
    let at = now();
    conn.prepare_cached(
        "INSERT INTO clients (id, platform_client_id, email, email_as_sent, first_name, last_name, phone, created_at,
                              updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8)",
    )?
    .execute(params![
        id,
        platform_id,
        email.as_str(),
        email.spelling(),
        contact.first_name.as_deref().unwrap_or(""),
        contact.last_name.as_deref().unwrap_or(""),
        contact.phone.as_deref().unwrap_or(""),
        at
    ])
    .map_err(|e| unique_conflict(e, "a client with this email or platform client id already exists"))?;
    get(conn, &id)
}

pub fn get(conn: &Connection, id: &str) -> StoreResult<Client> {
    conn.prepare_cached(concat!("SELECT ", client_columns!(), " FROM clients WHERE id = ?1"))?
        .query_row([id], Client::from_row)
        .optional()?
        .ok_or_else(|| StoreError::NotFound("Client not found".into()))
}

pub fn find_by_email(conn: &Connection, email: &Email) -> StoreResult<Option<Client>> {
    Ok(conn
        .prepare_cached(concat!("SELECT ", client_columns!(), " FROM clients WHERE email = ?1"))?
        .query_row([email.as_str()], Client::from_row)
        .optional()?)
}

pub fn by_email(conn: &Connection, email: &Email) -> StoreResult<Client> {
    find_by_email(conn, email)?.ok_or_else(|| StoreError::NotFound(format!("No client with email {email}")))
}

pub fn find_by_platform_id(conn: &Connection, platform_id: &str) -> StoreResult<Option<Client>> {
    Ok(conn
        .prepare_cached(concat!(
            "SELECT ",
            client_columns!(),
            " FROM clients WHERE platform_client_id = ?1"
        ))?
        .query_row([platform_id], Client::from_row)
        .optional()?)
}

pub fn set_kyc(conn: &Connection, id: &str, status: KycStatus, notes: Option<&str>) -> StoreResult<Client> {
    conn.prepare_cached(
        "UPDATE clients SET kyc_status = ?2, kyc_notes = COALESCE(?3, kyc_notes), updated_at = ?4 WHERE id = ?1",
    )?
    .execute(params![id, status.as_str(), notes, now()])?;
    get(conn, id)
}

/// Changes the fields given; `platform_id` only links a client that has none (it never replaces
/// one).
pub fn update_contact(
    conn: &Connection,
    id: &str,
    email: Option<&Email>,
    platform_id: Option<&str>,
    contact: &Contact,
) -> StoreResult<Client> {
    conn.prepare_cached(
        "UPDATE clients SET email = COALESCE(?2, email), first_name = COALESCE(?3, first_name),
                last_name = COALESCE(?4, last_name), phone = COALESCE(?5, phone), updated_at = ?6,
                platform_client_id = COALESCE(platform_client_id, ?7),
                email_as_sent = CASE WHEN ?2 IS NULL THEN email_as_sent ELSE ?8 END
         WHERE id = ?1",
    )?
    .execute(params![
        id,
        email.map(Email::as_str),
        contact.first_name,
        contact.last_name,
        contact.phone,
        now(),
        platform_id,
        email.and_then(Email::spelling)
    ])
    .map_err(|e| {
        let which = if e.to_string().contains("platform_client_id") {
            "clientId"
        } else {
            "email"
        };
        unique_conflict(e, &format!("another client already has this {which}"))
    })?;
    get(conn, id)
}

/// Terms found in more clients than this are searched by walking the clients newest first,
/// which fills the first page at once; rarer terms through the trigram indexes (migrations V3
/// and V11), which find them without reading every client.
const INDEXED_SEARCH_MAX_MATCHES: i64 = 5_000;

/// A phone's digits in SQL: a phone is digits, spaces and `+-().` (checked when it arrives).
/// Migration V11 indexes the same expression; keep them alike.
const PHONE_DIGITS: &str = "replace(replace(replace(replace(replace(replace(phone, ' ', ''), '+', ''), '-', ''), \
                            '(', ''), ')', ''), '.', '')";

/// Clients whose email, name ("first last") or platform client id contains `term` (any case),
/// or whose phone's digits contain the term's when it is written like (part of) a phone number,
/// newest first, after the `(created_at, id)` cursor. No term: every client.
pub fn search(
    conn: &Connection,
    term: Option<&str>,
    after: Option<(&str, &str)>,
    limit: u32,
) -> StoreResult<Vec<Client>> {
    search_with(conn, term, after, limit, INDEXED_SEARCH_MAX_MATCHES)
}

/// The digits of a term written like (part of) a phone number: digits, spaces and `+-().`
/// only, at least one digit, and no more than a phone can hold. `+44 (20) 7946` is `44207946`,
/// found in `+442079460958`.
///
/// Leading zeros are dropped when at least [`SIGNIFICANT_DIGITS`] digits are left: a national
/// number's trunk prefix (`020 7946 0958`) and an international call prefix (`0044 20 ...`) are
/// zeros that the number written with `+` does not have, so staff typing either form find it.
/// This only ever finds more: a phone holding all the digits holds the ones left.
fn phone_digits(term: &str) -> Option<String> {
    let phone_like = term.chars().all(is_phone_char);
    let digits: String = term.chars().filter(char::is_ascii_digit).collect();
    if !(phone_like && (1..=MAX_PHONE_CHARS).contains(&digits.len())) {
        return None;
    }
    let significant = digits.trim_start_matches('0');
    Some(if significant.len() >= SIGNIFICANT_DIGITS {
        significant.to_string()
    } else {
        digits
    })
}

/// Enough digits to tell clients apart once a term's leading zeros are dropped; a shorter
/// term keeps them (`0100` is not `100`).
const SIGNIFICANT_DIGITS: usize = 6;

/// How many of a phone term's digits, its last ones, the trigram index is asked for. A phrase
/// costs about its trigram count times the clients each trigram is in, and a country code or
/// a repeated digit (`555`) can be in nearly every phone: so the index is given the end of the
/// number, the part that tells clients apart, and the rows it finds are checked against all
/// the digits.
const PHONE_INDEXED_DIGITS: usize = 7;

fn search_with(
    conn: &Connection,
    term: Option<&str>,
    after: Option<(&str, &str)>,
    limit: u32,
    indexed_max_matches: i64,
) -> StoreResult<Vec<Client>> {
    let term = term.map(|t| t.trim().to_lowercase()).filter(|t| !t.is_empty());
    let phone = term.as_deref().and_then(phone_digits);
    // Digits need no escaping.
    let phone_pattern = phone.as_ref().map(|digits| format!("%{digits}%"));
    let (after_at, after_id) = after.unzip();
    let limit = limit.clamp(1, 200);
    // Trigrams need three characters: a shorter term, or a phone term of fewer than three
    // digits, is common enough to be found by walking.
    let indexable = |t: &String| t.chars().count() >= 3 && phone.as_ref().is_none_or(|d| d.len() >= 3);
    if let Some(term) = term.as_ref().filter(|t| indexable(t)) {
        let phrase = format!("\"{}\"", term.replace('"', "\"\""));
        // The rowids of the matching clients: ?1 is the term's phrase; ?2 the phrase of its
        // phone digits' end and ?3 all of them, as a LIKE pattern. The `+` keeps that LIKE from
        // being handed to the index, which would look up every trigram of the pattern.
        let matching = if phone.is_some() {
            "SELECT rowid FROM clients_search WHERE clients_search MATCH ?1
             UNION SELECT rowid FROM clients_phone_search
                   WHERE clients_phone_search MATCH ?2 AND +phone_digits LIKE ?3"
        } else {
            "SELECT rowid FROM clients_search WHERE clients_search MATCH ?1"
        };
        let phone_phrase = phone
            .as_ref()
            .map(|digits| format!("\"{}\"", &digits[digits.len().saturating_sub(PHONE_INDEXED_DIGITS)..]));
        let matches: i64 = conn
            .prepare_cached(&format!("SELECT count(*) FROM ({matching} LIMIT ?4)"))?
            .query_row(
                params![
                    phrase,
                    phone_phrase,
                    phone_pattern,
                    indexed_max_matches.saturating_add(1)
                ],
                |r| r.get(0),
            )?;
        if matches <= indexed_max_matches {
            let mut stmt = conn.prepare_cached(&format!(
                concat!(
                    "SELECT ",
                    client_columns!(),
                    " FROM clients
                     WHERE rowid IN ({matching})
                       AND (?4 IS NULL OR (created_at, id) < (?4, ?5))
                     ORDER BY created_at DESC, id DESC LIMIT ?6"
                ),
                matching = matching
            ))?;
            let rows = stmt.query_map(
                params![phrase, phone_phrase, phone_pattern, after_at, after_id, limit],
                Client::from_row,
            )?;
            return Ok(rows.collect::<Result<_, _>>()?);
        }
    }
    // SQLite's lower() and LIKE fold the case of ASCII letters only, so a term with other letters
    // (`ém`) is compared with the names folded by Rust, as the trigram index folds them: that
    // costs more per client, so only such terms pay it. Emails are stored folded already.
    let fold = match &term {
        Some(t) if !t.is_ascii() => CASEFOLD,
        _ => "lower",
    };
    let pattern = term.map(|t| format!("%{}%", t.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_")));
    let mut stmt = conn.prepare_cached(&format!(
        concat!(
            "SELECT ",
            client_columns!(),
            " FROM clients
             WHERE (?1 IS NULL OR email LIKE ?1 ESCAPE '\\'
                    OR {fold}(first_name || ' ' || last_name) LIKE ?1 ESCAPE '\\'
                    OR {fold}(platform_client_id) LIKE ?1 ESCAPE '\\'
                    OR (?5 IS NOT NULL AND {digits} LIKE ?5))
               AND (?2 IS NULL OR (created_at, id) < (?2, ?3))
             ORDER BY created_at DESC, id DESC LIMIT ?4"
        ),
        fold = fold,
        digits = PHONE_DIGITS
    ))?;
    let rows = stmt.query_map(
        params![pattern, after_at, after_id, limit, phone_pattern],
        Client::from_row,
    )?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// The SQL function that lower-cases text as Rust does, every letter rather than ASCII only.
const CASEFOLD: &str = "casefold";

/// Registers [`CASEFOLD`] on a connection (see `store::configure`).
pub(super) fn register_casefold(conn: &Connection) -> rusqlite::Result<()> {
    use rusqlite::functions::FunctionFlags;
    conn.create_scalar_function(
        CASEFOLD,
        1,
        FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DETERMINISTIC,
        |ctx| Ok(ctx.get::<Option<String>>(0)?.map(|text| text.to_lowercase())),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Db;

    fn emails(found: Vec<Client>) -> Vec<String> {
        found.into_iter().map(|c| c.email).collect()
    }

    #[test]
    fn the_trigram_index_and_the_walk_find_the_same_clients_in_the_same_order() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("t.db")).unwrap();
        db.write_sync(|tx| {
            let people = [
                (
                    "ann.smith@example.com",
                    "Ann",
                    "Smith",
                    Some("TP-1001"),
                    "+44 (20) 7946-0958",
                ),
                ("bob@example.org", "Bob", "Smithers", None, "555-0100"),
                ("c_100%@example.net", "Carl", "Percent", Some("TP-1002"), ""),
                ("dora@example.com", "Dora", "O\"Brien", None, "+1.212.555.0199"),
                ("eve@example.com", "Eve", "Annan", Some("X-77"), ""),
                ("emile@example.fr", "Émile", "Łukasiewicz", Some("ÉM-1"), "0033 1 23 45"),
            ];
            for (email, first, last, platform, phone) in people {
                let contact = Contact {
                    first_name: Some(first.into()),
                    last_name: Some(last.into()),
                    phone: Some(phone.into()),
                };
                insert(tx, &Email::parse(email)?, platform, &contact)?;
            }
            // A renamed client is found by the new name only.
            let eve = find_by_email(tx, &Email::parse("eve@example.com")?)?.unwrap();
            let renamed = Contact {
                last_name: Some("Zed".into()),
                ..Contact::default()
            };
            update_contact(tx, &eve.id, None, None, &renamed)?;
            // So is a client whose phone changed.
            let bob = find_by_email(tx, &Email::parse("bob@example.org")?)?.unwrap();
            let new_phone = Contact {
                phone: Some("(555) 0142".into()),
                ..Contact::default()
            };
            update_contact(tx, &bob.id, None, None, &new_phone)?;

            let too_long = "5".repeat(MAX_PHONE_CHARS + 1);
            let cases: [(&str, &[&str]); 29] = [
                ("SMITH", &["ann.smith@example.com", "bob@example.org"]),
                ("ann smith", &["ann.smith@example.com"]),
                ("tp-100", &["ann.smith@example.com", "c_100%@example.net"]),
                ("100%", &["c_100%@example.net"]),
                ("o\"bri", &["dora@example.com"]),
                ("a o\"", &["dora@example.com"]),
                ("eve zed", &["eve@example.com"]),
                ("annan", &[]),
                ("nobody", &[]),
                // Letters beyond ASCII in any case, the short ones found by walking too.
                ("ÉMILE", &["emile@example.fr"]),
                ("éM", &["emile@example.fr"]),
                ("ŁU", &["emile@example.fr"]),
                ("ém-", &["emile@example.fr"]),
                // Phones by their digits, written either way; the short ones found by walking.
                ("7946 0958", &["ann.smith@example.com"]),
                ("+442079", &["ann.smith@example.com"]),
                ("555", &["bob@example.org", "dora@example.com"]),
                ("(555) 014", &["bob@example.org"]),
                // The index is asked for the last seven digits; the rest must match too.
                ("20 7946 0958", &["ann.smith@example.com"]),
                ("99 7946 0958", &[]),
                // More digits than a phone holds match no phone.
                (&too_long, &[]),
                ("0100", &[]),
                // A national form, or one with an international call prefix, finds the number
                // written with `+`; a short term keeps its zeros.
                ("020 7946 0958", &["ann.smith@example.com"]),
                ("0044 20 7946 0958", &["ann.smith@example.com"]),
                ("00331", &["emile@example.fr"]),
                ("(20)", &["ann.smith@example.com"]),
                ("45", &["emile@example.fr"]),
                // A term with letters is not a phone: `tp-1002`'s digits are nobody's phone.
                ("tp-1002", &["c_100%@example.net"]),
                ("1002", &["c_100%@example.net"]),
                (
                    "  ",
                    &[
                        "ann.smith@example.com",
                        "bob@example.org",
                        "c_100%@example.net",
                        "dora@example.com",
                        "emile@example.fr",
                        "eve@example.com",
                    ],
                ),
            ];
            for (term, want) in cases {
                let indexed = emails(search_with(tx, Some(term), None, 50, i64::MAX)?);
                let walked = emails(search_with(tx, Some(term), None, 50, -1)?);
                assert_eq!(indexed, walked, "both ways, in the same order, for {term:?}");
                let mut found = indexed.clone();
                found.sort();
                assert_eq!(found, want, "search for {term:?}");
            }
            // The cursor pages both ways alike.
            let first = search_with(tx, Some("example"), None, 2, i64::MAX)?;
            let last = first.last().unwrap();
            let cursor = Some((last.created_at.as_str(), last.id.as_str()));
            assert_eq!(
                emails(search_with(tx, Some("example"), cursor, 50, i64::MAX)?),
                emails(search_with(tx, Some("example"), cursor, 50, -1)?)
            );
            Ok(())
        })
        .unwrap();
    }
}
