//! Notes staff and the Trading Platform leave on a client.

use rusqlite::{params, Connection, Row};
use serde::Serialize;

use super::{now, StoreResult};

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Note {
    pub id: String,
    #[serde(skip)]
    pub client_id: String,
    pub comment: String,
    pub author: String,
    pub created_at: String,
}

impl Note {
    fn from_row(r: &Row) -> rusqlite::Result<Note> {
        Ok(Note {
            id: r.get("id")?,
            client_id: r.get("client_id")?,
            comment: r.get("comment")?,
            author: r.get("author")?,
            created_at: r.get("created_at")?,
        })
    }
}

pub fn insert(conn: &Connection, client_id: &str, comment: &str, author: &str) -> StoreResult<Note> {
    let note = Note {
        id: crate::domain::new_uuid().to_string(),
        client_id: client_id.to_string(),
        comment: comment.to_string(),
        author: author.to_string(),
        created_at: now(),
    };
    conn.prepare_cached("INSERT INTO notes (id, client_id, comment, author, created_at) VALUES (?1, ?2, ?3, ?4, ?5)")?
        .execute(params![
            note.id,
            note.client_id,
            note.comment,
            note.author,
            note.created_at
        ])?;
    Ok(note)
}

/// A client's notes, newest first.
pub fn for_client(conn: &Connection, client_id: &str, limit: u32) -> StoreResult<Vec<Note>> {
    let mut stmt =
        conn.prepare_cached("SELECT * FROM notes WHERE client_id = ?1 ORDER BY created_at DESC, rowid DESC LIMIT ?2")?;
    let rows = stmt.query_map(params![client_id, limit], Note::from_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}
