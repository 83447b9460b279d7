//! Response shapes shared by more than one surface.

use serde::Serialize;

use crate::domain::Money;
use crate::store::accounts::Account;

/// An account as the guide shows it ("Adjust Account Balance", response), plus `parentId`
/// (null for a primary account) and timestamps. The CRM holds no open positions, so `equity`
/// equals `balance` and `margin`/`marginLevel` are zero.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AccountView {
    // In the guide's order, for a client that compares the text.
    pub id: String,
    pub real_balance: Money,
    pub demo_balance: Money,
    pub bonus_balance: Money,
    pub balance: Money,
    pub leverage: u16,
    pub currency: String,
    pub equity: Money,
    pub margin: Money,
    pub margin_level: Money,
    pub client_id: String,
    pub parent_id: Option<String>,
    pub created_at: String,
    pub updated_at: String,
}

impl From<&Account> for AccountView {
    fn from(a: &Account) -> AccountView {
        AccountView {
            id: a.id.clone(),
            client_id: a.client_id.clone(),
            parent_id: a.parent_id.clone(),
            real_balance: a.real,
            demo_balance: a.demo,
            bonus_balance: a.bonus,
            balance: a.balance(),
            leverage: a.leverage,
            currency: a.currency.clone(),
            equity: a.balance(),
            margin: Money::ZERO,
            margin_level: Money::ZERO,
            created_at: a.created_at.clone(),
            updated_at: a.updated_at.clone(),
        }
    }
}

impl From<Account> for AccountView {
    fn from(a: Account) -> AccountView {
        AccountView::from(&a)
    }
}

/// A client's primary account and its subaccounts (`GET /api/service/accounts/:clientEmail`).
#[derive(Debug, Clone, Serialize)]
pub struct AccountsView {
    pub account: AccountView,
    pub subaccounts: Vec<AccountView>,
}

impl AccountsView {
    pub fn new(primary: &Account, subaccounts: &[Account]) -> AccountsView {
        AccountsView {
            account: primary.into(),
            subaccounts: subaccounts.iter().map(AccountView::from).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_account_renders_in_the_guides_shape() {
        let account = Account {
            id: "a".into(),
            client_id: "c".into(),
            parent_id: None,
            real: Money::parse("100").unwrap(),
            demo: Money::parse("500").unwrap(),
            bonus: Money::parse("0.5").unwrap(),
            leverage: 100,
            currency: "USD".into(),
            created_at: "t".into(),
            updated_at: "u".into(),
        };
        let json = serde_json::to_value(AccountView::from(&account)).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "id": "a", "clientId": "c", "parentId": null,
                "realBalance": "100.00", "demoBalance": "500.00", "bonusBalance": "0.50",
                "balance": "600.50", "leverage": 100, "currency": "USD",
                "equity": "600.50", "margin": "0.00", "marginLevel": "0.00",
                "createdAt": "t", "updatedAt": "u"
            })
        );
    }
}
