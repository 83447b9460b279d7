//! The webhook body `{"event", "data", "timestamp", "id"?}` parsed into typed events. Every
//! field is validated here, and every error names the field (`data.amount: ...`).

use serde::de::{IgnoredAny, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::{Map, Value};

use super::fields::{AccountRef, Currency, Name, Notes, Phone, Positive, Reference, Timestamp};
use crate::domain::{clip, Email, KycStatus, Leverage, Money};
use crate::http::body::parse_json;
use crate::http::error::ApiError;
use crate::store::clients::Contact;

/// The guide's five events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventName {
    ClientRegistered,
    DepositCompleted,
    WithdrawalCompleted,
    KycUpdated,
    AccountUpdated,
}

impl EventName {
    const ALL: [EventName; 5] = [
        EventName::ClientRegistered,
        EventName::DepositCompleted,
        EventName::WithdrawalCompleted,
        EventName::KycUpdated,
        EventName::AccountUpdated,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventName::ClientRegistered => "client.registered",
            EventName::DepositCompleted => "deposit.completed",
            EventName::WithdrawalCompleted => "withdrawal.completed",
            EventName::KycUpdated => "kyc.updated",
            EventName::AccountUpdated => "account.updated",
        }
    }

    fn parse(s: &str) -> Result<EventName, ApiError> {
        EventName::ALL.into_iter().find(|e| e.as_str() == s).ok_or_else(|| {
            let known: Vec<&str> = EventName::ALL.iter().map(|e| e.as_str()).collect();
            ApiError::BadRequest(format!(
                "event: unknown event '{}'; expected one of {}",
                clip(s, 64),
                known.join(", ")
            ))
        })
    }
}

/// A signed webhook, fully parsed.
#[derive(Debug, Clone)]
pub struct Event {
    pub name: EventName,
    /// The optional `id` the Trading Platform gives each event.
    pub id: Option<String>,
    pub timestamp: String,
    /// `data` as received, for the content hash that tells a retry from a reused id.
    pub data: Value,
    pub action: Action,
}

#[derive(Debug, Clone)]
pub enum Action {
    Register(Registration),
    Deposit(Movement),
    Withdraw(Movement),
    Kyc(KycChange),
    UpdateAccount(AccountChange),
}

impl Action {
    /// The platform's transaction id of a money event, when it gave one: the ledger reference,
    /// and what makes a retry of the event a duplicate whatever else changed.
    pub fn transaction_id(&self) -> Option<&str> {
        match self {
            Action::Deposit(m) | Action::Withdraw(m) => m.transaction_id.as_deref(),
            _ => None,
        }
    }

    /// A deposit or withdrawal: its one effect is a balance change, audited as such.
    pub fn moves_money(&self) -> bool {
        matches!(self, Action::Deposit(_) | Action::Withdraw(_))
    }

    pub fn client(&self) -> ClientRef {
        match self {
            Action::Register(r) => ClientRef {
                email: Some(r.email.clone()),
                platform_id: r.platform_id.clone(),
            },
            Action::Deposit(m) | Action::Withdraw(m) => m.who.clone(),
            Action::Kyc(k) => k.who.clone(),
            Action::UpdateAccount(a) => a.who.clone(),
        }
    }
}

/// How an event names its client: `data.email` or `data.clientId` (the platform's id).
#[derive(Debug, Clone)]
pub struct ClientRef {
    pub email: Option<Email>,
    pub platform_id: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Registration {
    pub platform_id: Option<String>,
    pub email: Email,
    pub contact: Contact,
    pub currency: Option<String>,
    pub leverage: Option<Leverage>,
}

#[derive(Debug, Clone)]
pub struct Movement {
    pub who: ClientRef,
    /// Always positive: the event says which way it moves.
    pub amount: Money,
    pub currency: Option<String>,
    /// Optional (SPEC); without it the event is deduplicated by its `id`, else its exact body.
    pub transaction_id: Option<String>,
    pub account_id: Option<String>,
}

#[derive(Debug, Clone)]
pub struct KycChange {
    pub who: ClientRef,
    pub status: KycStatus,
    pub notes: Option<String>,
}

#[derive(Debug, Clone)]
pub struct AccountChange {
    pub who: ClientRef,
    /// Only with `data.clientId`: then `data.email` is the client's new address.
    pub new_email: Option<Email>,
    pub contact: Contact,
    pub account_id: Option<String>,
    pub leverage: Option<Leverage>,
    pub currency: Option<String>,
}

/// The body's top level: `event`, `data`, `timestamp` and the optional `id`. Other keys are
/// ignored (the platform may add some), except one spelt like these (see [`refuse_near_miss`]).
struct Envelope {
    event: Option<String>,
    data: Option<Map<String, Value>>,
    timestamp: Option<Timestamp>,
    id: Option<Reference>,
    /// Why a top-level key spelt like a field was refused. Reported once the body has parsed,
    /// before a missing field: `{"Data": ...}` is answered with the field meant.
    near_miss: Option<String>,
}

const ENVELOPE_FIELDS: &[&str] = &["event", "data", "timestamp", "id"];

impl<'de> Deserialize<'de> for Envelope {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(EnvelopeVisitor)
    }
}

struct EnvelopeVisitor;

impl<'de> Visitor<'de> for EnvelopeVisitor {
    type Value = Envelope;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a webhook body {\"event\", \"data\", \"timestamp\"}")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Envelope, A::Error> {
        let (mut event, mut data, mut timestamp, mut id, mut misspelt) = (None, None, None, None, None);
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "event" => event = Some(map.next_value()?),
                "data" => data = Some(map.next_value()?),
                "timestamp" => timestamp = Some(map.next_value()?),
                "id" => id = map.next_value()?,
                other => {
                    if misspelt.is_none() {
                        misspelt = misspelling("", other, ENVELOPE_FIELDS);
                    }
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(Envelope {
            event,
            data,
            timestamp,
            id,
            near_miss: misspelt,
        })
    }
}

/// The fields an event's `data` may carry, for [`refuse_near_miss`].
trait Fields {
    const FIELDS: &'static [&'static str];
}

/// Why `key` (at `prefix`) is refused, when it is a misspelling of one of `fields`
/// (`transactionID`, `account_id`, `Amount`). Ignored like other unknown keys, such a key would
/// move money to the primary account or let a retry with a new timestamp credit twice; keys
/// unlike any field are ignored, so the platform may add its own.
fn misspelling(prefix: &str, key: &str, fields: &[&str]) -> Option<String> {
    let fold = |s: &str| -> String {
        s.chars()
            .filter(|c| !matches!(c, '_' | '-' | ' '))
            .flat_map(char::to_lowercase)
            .collect()
    };
    let folded = fold(key);
    let meant = fields.iter().find(|f| **f != key && fold(f) == folded)?;
    Some(format!("{prefix}{}: not a field; did you mean {meant}?", clip(key, 64)))
}

fn refuse_near_miss<T: Fields>(data: &Map<String, Value>) -> Result<(), ApiError> {
    // A field's own name (every key, nearly always) is passed over without folding anything.
    let misspelt = data
        .keys()
        .filter(|k| !T::FIELDS.contains(&k.as_str()))
        .find_map(|key| misspelling("data.", key, T::FIELDS));
    match misspelt {
        Some(why) => Err(ApiError::BadRequest(why)),
        None => Ok(()),
    }
}

/// Parses a signed body. Errors are 400s naming the field.
pub fn parse(raw: &[u8]) -> Result<Event, ApiError> {
    let Envelope {
        event,
        data,
        timestamp,
        id,
        near_miss,
    } = parse_json(raw)?;
    if let Some(why) = near_miss {
        return Err(ApiError::BadRequest(why));
    }
    let missing = |field: &str| ApiError::BadRequest(format!("invalid JSON body: missing field `{field}`"));
    let event = event.ok_or_else(|| missing("event"))?;
    let data = data.ok_or_else(|| missing("data"))?;
    let timestamp = timestamp.ok_or_else(|| missing("timestamp"))?;
    let name = EventName::parse(&event)?;
    let data = Value::Object(data);
    let action = match name {
        EventName::ClientRegistered => Action::Register(parse_data::<RegisteredData>(&data)?.into()),
        EventName::DepositCompleted => Action::Deposit(parse_data::<MoneyData>(&data)?.try_into()?),
        EventName::WithdrawalCompleted => Action::Withdraw(parse_data::<MoneyData>(&data)?.try_into()?),
        EventName::KycUpdated => Action::Kyc(parse_data::<KycData>(&data)?.try_into()?),
        EventName::AccountUpdated => Action::UpdateAccount(parse_data::<AccountData>(&data)?.try_into()?),
    };
    Ok(Event {
        name,
        id: id.map(|r| r.0),
        timestamp: timestamp.0,
        data,
        action,
    })
}

/// The event name of a body that may not be valid at all, for the attempt log only.
pub fn peek_event(raw: &[u8]) -> String {
    #[derive(Deserialize)]
    struct Peek {
        event: String,
    }
    serde_json::from_slice::<Peek>(raw)
        .map(|p| clip(&p.event, 64))
        .unwrap_or_default()
}

fn parse_data<T: serde::de::DeserializeOwned + Fields>(data: &Value) -> Result<T, ApiError> {
    if let Value::Object(map) = data {
        refuse_near_miss::<T>(map)?;
    }
    serde_path_to_error::deserialize(data).map_err(|e| {
        let path = e.path().to_string();
        let msg = e.into_inner().to_string();
        if path.is_empty() || path == "." {
            ApiError::BadRequest(format!("data: {msg}"))
        } else {
            ApiError::BadRequest(format!("data.{path}: {msg}"))
        }
    })
}

fn who(email: Option<Email>, platform_id: Option<Reference>) -> Result<ClientRef, ApiError> {
    if email.is_none() && platform_id.is_none() {
        return Err(ApiError::BadRequest(
            "data: data.email or data.clientId is required to find the client".into(),
        ));
    }
    Ok(ClientRef {
        email,
        platform_id: platform_id.map(|r| r.0),
    })
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RegisteredData {
    client_id: Option<Reference>,
    email: Email,
    first_name: Option<Name>,
    last_name: Option<Name>,
    phone: Option<Phone>,
    currency: Option<Currency>,
    leverage: Option<Leverage>,
}

impl Fields for RegisteredData {
    const FIELDS: &'static [&'static str] = &[
        "clientId",
        "email",
        "firstName",
        "lastName",
        "phone",
        "currency",
        "leverage",
    ];
}

impl From<RegisteredData> for Registration {
    fn from(d: RegisteredData) -> Registration {
        Registration {
            platform_id: d.client_id.map(|r| r.0),
            email: d.email,
            contact: Contact {
                first_name: d.first_name.map(|n| n.0),
                last_name: d.last_name.map(|n| n.0),
                phone: d.phone.map(|p| p.0),
            },
            currency: d.currency.map(|c| c.0),
            leverage: d.leverage,
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct MoneyData {
    email: Option<Email>,
    client_id: Option<Reference>,
    amount: Positive,
    currency: Option<Currency>,
    transaction_id: Option<Reference>,
    account_id: Option<AccountRef>,
}

impl Fields for MoneyData {
    const FIELDS: &'static [&'static str] = &["email", "clientId", "amount", "currency", "transactionId", "accountId"];
}

impl TryFrom<MoneyData> for Movement {
    type Error = ApiError;
    fn try_from(d: MoneyData) -> Result<Movement, ApiError> {
        Ok(Movement {
            who: who(d.email, d.client_id)?,
            amount: d.amount.0,
            currency: d.currency.map(|c| c.0),
            transaction_id: d.transaction_id.map(|t| t.0),
            account_id: d.account_id.map(|a| a.0),
        })
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct KycData {
    email: Option<Email>,
    client_id: Option<Reference>,
    kyc_status: KycStatus,
    kyc_notes: Option<Notes>,
}

impl Fields for KycData {
    const FIELDS: &'static [&'static str] = &["email", "clientId", "kycStatus", "kycNotes"];
}

impl TryFrom<KycData> for KycChange {
    type Error = ApiError;
    fn try_from(d: KycData) -> Result<KycChange, ApiError> {
        Ok(KycChange {
            who: who(d.email, d.client_id)?,
            status: d.kyc_status,
            notes: d.kyc_notes.map(|n| n.0),
        })
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AccountData {
    email: Option<Email>,
    client_id: Option<Reference>,
    account_id: Option<AccountRef>,
    leverage: Option<Leverage>,
    currency: Option<Currency>,
    first_name: Option<Name>,
    last_name: Option<Name>,
    phone: Option<Phone>,
}

impl Fields for AccountData {
    const FIELDS: &'static [&'static str] = &[
        "email",
        "clientId",
        "accountId",
        "leverage",
        "currency",
        "firstName",
        "lastName",
        "phone",
    ];
}

impl TryFrom<AccountData> for AccountChange {
    type Error = ApiError;
    fn try_from(d: AccountData) -> Result<AccountChange, ApiError> {
        // With a clientId the client is found by it, so an email is a new address; without one
        // the email finds the client and cannot also change it.
        let (who, new_email) = match d.client_id {
            Some(id) => (who(None, Some(id))?, d.email),
            None => (who(d.email, None)?, None),
        };
        let change = AccountChange {
            who,
            new_email,
            contact: Contact {
                first_name: d.first_name.map(|n| n.0),
                last_name: d.last_name.map(|n| n.0),
                phone: d.phone.map(|p| p.0),
            },
            account_id: d.account_id.map(|a| a.0),
            leverage: d.leverage,
            currency: d.currency.map(|c| c.0),
        };
        let contact = &change.contact;
        if change.leverage.is_none()
            && change.currency.is_none()
            && change.new_email.is_none()
            && contact.first_name.is_none()
            && contact.last_name.is_none()
            && contact.phone.is_none()
        {
            return Err(ApiError::BadRequest(
                "data: nothing to update; send leverage, currency, firstName, lastName, phone or (with clientId) email"
                    .into(),
            ));
        }
        Ok(change)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn the_guides_example_parses() {
        let raw = br#"{"event":"client.registered","data":{"clientId":"TEST001","email":"test@example.com","firstName":"Test","lastName":"User","phone":"+1234567890"},"timestamp":"2025-10-13T19:00:00Z"}"#;
        let event = parse(raw).unwrap();
        assert_eq!(event.name, EventName::ClientRegistered);
        let Action::Register(r) = event.action else {
            panic!("not a registration")
        };
        assert_eq!(r.platform_id.as_deref(), Some("TEST001"));
        assert_eq!(r.email.as_str(), "test@example.com");
    }

    fn body(event: &str, data: Value) -> Vec<u8> {
        json!({ "event": event, "data": data, "timestamp": "2025-10-13T19:00:00Z" })
            .to_string()
            .into_bytes()
    }

    #[test]
    fn keys_spelt_like_a_field_are_refused_and_others_ignored() {
        let deposit = |extra: Value| {
            let mut data = json!({ "email": "a@b.co", "amount": "1", "transactionId": "t" });
            data.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
            parse(&body("deposit.completed", data))
        };
        for (key, field) in [
            ("transactionID", "transactionId"),
            ("account_id", "accountId"),
            ("AccountId", "accountId"),
            ("Amount", "amount"),
            ("client-id", "clientId"),
        ] {
            let err = deposit(json!({ key: "x" })).unwrap_err().to_string();
            assert!(
                err.contains(&format!("data.{key}")) && err.contains(field),
                "{key}: {err}"
            );
        }
        assert!(deposit(json!({ "method": "card", "fee": "0" })).is_ok());
        let kyc = json!({ "email": "a@b.co", "kycStatus": "approved", "kyc_notes": "n" });
        assert!(parse(&body("kyc.updated", kyc))
            .unwrap_err()
            .to_string()
            .contains("kycNotes"));

        let top = br#"{"event":"kyc.updated","data":{"email":"a@b.co","kycStatus":"approved"},"timestamp":"2025-10-13T19:00:00Z","ID":"e1"}"#;
        let err = parse(top).unwrap_err().to_string();
        assert_eq!(err, "ID: not a field; did you mean id?");
        // The field meant, rather than "missing field data".
        let capital = br#"{"event":"kyc.updated","Data":{"email":"a@b.co","kycStatus":"approved"},"timestamp":"2025-10-13T19:00:00Z"}"#;
        assert_eq!(
            parse(capital).unwrap_err().to_string(),
            "Data: not a field; did you mean data?"
        );
        let without = br#"{"event":"kyc.updated","timestamp":"2025-10-13T19:00:00Z"}"#;
        assert_eq!(
            parse(without).unwrap_err().to_string(),
            "invalid JSON body: missing field `data`"
        );
        let other = br#"{"event":"kyc.updated","data":{"email":"a@b.co","kycStatus":"approved"},"timestamp":"2025-10-13T19:00:00Z","source":"tp","id":null}"#;
        assert!(parse(other).is_ok());
    }

    /// Every name in a `FIELDS` list is a field its struct reads: a value of the wrong type
    /// under that name is an error naming it (an unknown key would be ignored instead).
    #[test]
    fn the_field_lists_match_the_structs() {
        let lists = [
            ("client.registered", RegisteredData::FIELDS),
            ("deposit.completed", MoneyData::FIELDS),
            ("withdrawal.completed", MoneyData::FIELDS),
            ("kyc.updated", KycData::FIELDS),
            ("account.updated", AccountData::FIELDS),
        ];
        for (event, fields) in lists {
            for field in fields {
                let err = parse(&body(event, json!({ *field: { "wrong": "type" } })))
                    .unwrap_err()
                    .to_string();
                assert!(err.starts_with(&format!("data.{field}:")), "{event} {field}: {err}");
            }
        }
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            (
                r#"{"event":"deposit.completed","data":{"email":"a@b.co","amount":"-1","transactionId":"t"},"timestamp":"2025-10-13T19:00:00Z"}"#,
                "data.amount",
            ),
            (
                r#"{"event":"deposit.completed","data":{"email":"nope","amount":"1","transactionId":"t"},"timestamp":"2025-10-13T19:00:00Z"}"#,
                "data.email",
            ),
            (
                r#"{"event":"deposit.completed","data":{"email":"a@b.co","amount":"1","transactionId":"t 1"},"timestamp":"2025-10-13T19:00:00Z"}"#,
                "data.transactionId",
            ),
            (
                r#"{"event":"kyc.updated","data":{"email":"a@b.co","kycStatus":"done"},"timestamp":"2025-10-13T19:00:00Z"}"#,
                "data.kycStatus",
            ),
            (
                r#"{"event":"kyc.updated","data":{"email":"a@b.co","kycStatus":"approved"},"timestamp":"yesterday"}"#,
                "timestamp",
            ),
            (
                r#"{"event":"nope","data":{},"timestamp":"2025-10-13T19:00:00Z"}"#,
                "event",
            ),
        ];
        for (raw, field) in cases {
            let err = parse(raw.as_bytes()).unwrap_err().to_string();
            assert!(err.contains(field), "{raw}: {err} should name {field}");
        }
    }
}
