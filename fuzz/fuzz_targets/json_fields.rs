//! Request bodies parse into the domain types or fail with a message; never a panic.
#![no_main]

use crm::domain::{Email, FundType, KycStatus, Leverage, Money};
use crm::http::body::parse_json;
use libfuzzer_sys::fuzz_target;

#[derive(serde::Deserialize)]
#[allow(dead_code)]
#[serde(rename_all = "camelCase")]
struct Request {
    email: Email,
    amount: Money,
    fund_type: FundType,
    leverage: Option<Leverage>,
    kyc_status: Option<KycStatus>,
}

fuzz_target!(|data: &[u8]| {
    let _ = parse_json::<Request>(data);
    let _ = parse_json::<serde_json::Value>(data);
});
