//! Response shapes shared by several surfaces.

use serde::Serialize;

use crate::domain::Money;
use crate::store::accounts::Account;

/// The guide's account response (sections 4 and 5), plus `parentId` for subaccounts and the
/// timestamps. The CRM holds no open positions, so `equity` is the balance and `margin` and
/// `marginLevel` are zero, as in the guide's example.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AccountView {
    pub id: String,
    pub client_id: String,
    pub parent_id: Option<String>,
    pub real_balance: Money,
    pub demo_balance: Money,
    pub bonus_balance: Money,
    pub balance: Money,
    pub leverage: u16,
    pub currency: String,
    pub equity: Money,
    pub margin: Money,
    pub margin_level: Money,
    pub created_at: String,
    pub updated_at: String,
}

impl From<&Account> for AccountView {
    fn from(a: &Account) -> AccountView {
        let balance = a.balance();
        AccountView {
            id: a.id.clone(),
            client_id: a.client_id.clone(),
            parent_id: a.parent_id.clone(),
            real_balance: a.real,
            demo_balance: a.demo,
            bonus_balance: a.bonus,
            balance,
            leverage: a.leverage,
            currency: a.currency.clone(),
            equity: balance,
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
