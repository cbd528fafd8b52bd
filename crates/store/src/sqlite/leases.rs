//! Nodes, leases and fences in SQLite (this machine's clock; the write lock of the database
//! orders them against the writes they fence).

use super::schema::Db;
use crate::{now_ms, ConversationId, Fence, Lease, LeaseHolder, NodeId, NodeInfo, NodeStatus, Renewal, StoreError};
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

/// Refuses a write to `id` with `fence` unless that is the conversation's lease's fence (a
/// conversation that does not exist is let through: its write is skipped anyway). Run inside
/// the write's transaction.
pub(super) fn check_fence(conn: &Connection, id: &ConversationId, fence: Option<Fence>) -> Result<(), StoreError> {
    let Some(fence) = fence else { return Ok(()) };
    let refused: bool = conn
        .prepare_cached(
            "SELECT EXISTS (SELECT 1 FROM threads WHERE thread_id = ?1)
                AND NOT EXISTS (SELECT 1 FROM leases WHERE thread_id = ?1 AND fence = ?2)",
        )
        .db()?
        .query_row(params![id.as_str(), fence.to_db()], |r| r.get(0))
        .db()?;
    if refused {
        return Err(StoreError::Fenced { thread_id: id.to_string(), fence });
    }
    Ok(())
}

pub(super) fn register_node(conn: &Connection, node: &NodeInfo) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO nodes (node_id, address, heartbeat_at_ms) VALUES (?1, ?2, ?3)
         ON CONFLICT (node_id) DO UPDATE SET address = excluded.address, heartbeat_at_ms = excluded.heartbeat_at_ms",
        params![node.id.as_str(), node.address, now_ms()],
    )
    .db()?;
    Ok(())
}

pub(super) fn nodes(conn: &Connection) -> Result<Vec<NodeStatus>, StoreError> {
    let now = now_ms();
    let mut query = conn
        .prepare_cached(
            "SELECT n.node_id, n.address, n.heartbeat_at_ms,
                    (SELECT COUNT(*) FROM leases l WHERE l.node_id = n.node_id AND l.expires_at_ms > ?1)
             FROM nodes n ORDER BY n.node_id",
        )
        .db()?;
    let rows = query
        .query_map([now], |r| {
            let heartbeat_at_ms: i64 = r.get(2)?;
            Ok(NodeStatus {
                id: NodeId::new(r.get::<_, String>(0)?),
                address: r.get(1)?,
                heartbeat_at_ms,
                heartbeat_age_ms: now.saturating_sub(heartbeat_at_ms).max(0) as u64,
                conversations: r.get::<_, i64>(3)?.max(0) as u64,
            })
        })
        .db()?;
    rows.map(|row| row.db()).collect()
}

pub(super) fn acquire(
    conn: &mut Connection,
    conversation: &ConversationId,
    node: &NodeId,
    ttl_ms: i64,
) -> Result<Lease, StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).db()?;
    let now = now_ms();
    let held = tx
        .query_row(
            "SELECT l.node_id, l.fence, l.expires_at_ms, n.address
             FROM leases l LEFT JOIN nodes n ON n.node_id = l.node_id WHERE l.thread_id = ?1",
            [conversation.as_str()],
            |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?, r.get::<_, i64>(2)?, r.get::<_, Option<String>>(3)?)),
        )
        .optional()
        .db()?;
    let fence = match held {
        Some((owner, fence, _, _)) if owner == node.as_str() => fence,
        Some((owner, _, expires_at_ms, address)) if expires_at_ms > now => {
            return Err(StoreError::OwnedElsewhere {
                thread_id: conversation.to_string(),
                node: owner.into(),
                address,
            });
        }
        _ => tx.query_row("UPDATE lease_fences SET last = last + 1 RETURNING last", [], |r| r.get(0)).db()?,
    };
    let expires_at_ms = now.saturating_add(ttl_ms);
    tx.execute(
        "INSERT INTO leases (thread_id, node_id, fence, expires_at_ms) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (thread_id) DO UPDATE SET node_id = excluded.node_id, fence = excluded.fence,
         expires_at_ms = excluded.expires_at_ms",
        params![conversation.as_str(), node.as_str(), fence, expires_at_ms],
    )
    .db()?;
    tx.commit().db()?;
    Ok(Lease { conversation: conversation.clone(), node: node.clone(), fence: Fence::from_db(fence), expires_at_ms })
}

pub(super) fn holder(conn: &Connection, conversation: &ConversationId) -> Result<Option<LeaseHolder>, StoreError> {
    conn.prepare_cached(
        "SELECT l.node_id, n.address, l.fence, l.expires_at_ms
         FROM leases l LEFT JOIN nodes n ON n.node_id = l.node_id
         WHERE l.thread_id = ?1 AND l.expires_at_ms > ?2",
    )
    .db()?
    .query_row(params![conversation.as_str(), now_ms()], |r| {
        Ok(LeaseHolder {
            node: NodeId::new(r.get::<_, String>(0)?),
            address: r.get(1)?,
            fence: Fence::from_db(r.get(2)?),
            expires_at_ms: r.get(3)?,
        })
    })
    .optional()
    .db()
}

/// One statement: the ids go in as a JSON array.
pub(super) fn renew(
    conn: &Connection,
    node: &NodeId,
    conversations: &[ConversationId],
    ttl_ms: i64,
) -> Result<Renewal, StoreError> {
    let expires_at_ms = now_ms().saturating_add(ttl_ms);
    let ids = serde_json::to_string(conversations)
        .map_err(|e| StoreError::Backend { backend: super::schema::BACKEND, message: e.to_string() })?;
    let mut query = conn
        .prepare_cached(
            "UPDATE leases SET expires_at_ms = ?3
             WHERE node_id = ?1 AND thread_id IN (SELECT value FROM json_each(?2)) RETURNING thread_id",
        )
        .db()?;
    let held = query
        .query_map(params![node.as_str(), ids, expires_at_ms], |r| r.get::<_, String>(0))
        .db()?
        .map(|id| id.db().map(ConversationId::from))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Renewal::sort(conversations, &held, expires_at_ms))
}

pub(super) fn release(conn: &Connection, conversation: &ConversationId, node: &NodeId) -> Result<bool, StoreError> {
    let n = conn
        .execute(
            "DELETE FROM leases WHERE thread_id = ?1 AND node_id = ?2",
            params![conversation.as_str(), node.as_str()],
        )
        .db()?;
    Ok(n > 0)
}

/// One statement: the ids go in as a JSON array.
pub(super) fn release_many(
    conn: &Connection,
    node: &NodeId,
    conversations: &[ConversationId],
) -> Result<u64, StoreError> {
    if conversations.is_empty() {
        return Ok(0);
    }
    let ids = serde_json::to_string(conversations)
        .map_err(|e| StoreError::Backend { backend: super::schema::BACKEND, message: e.to_string() })?;
    let n = conn
        .prepare_cached("DELETE FROM leases WHERE node_id = ?1 AND thread_id IN (SELECT value FROM json_each(?2))")
        .db()?
        .execute(params![node.as_str(), ids])
        .db()?;
    Ok(n as u64)
}
