//! Nodes, leases and fences in PostgreSQL: one statement, one round trip, per call; times are
//! the database's (`now()`), so the nodes' clocks do not matter.

use super::db::Db;
use super::errors::BACKEND;
use crate::ownership::ttl_ms;
use crate::{ConversationId, Fence, Lease, LeaseHolder, NodeId, NodeInfo, NodeStatus, Renewal, StoreError};
use std::time::Duration;

/// Milliseconds since the epoch of a `timestamptz` expression.
macro_rules! ms {
    ($e:literal) => {
        concat!("(extract(epoch FROM ", $e, ") * 1000)::bigint")
    };
}

const REGISTER_NODE: &str = "INSERT INTO nodes (node_id, address, heartbeat_at) VALUES ($1, $2, now())
     ON CONFLICT (node_id) DO UPDATE SET address = excluded.address, heartbeat_at = excluded.heartbeat_at";

const NODES: &str = concat!(
    "SELECT n.node_id, n.address, ",
    ms!("n.heartbeat_at"),
    ", greatest(",
    ms!("now()"),
    " - ",
    ms!("n.heartbeat_at"),
    ", 0), (SELECT count(*) FROM leases l WHERE l.node_id = n.node_id AND l.expires_at > now())
     FROM nodes n ORDER BY n.node_id"
);

/// Takes the lease if it is free, expired, or the node's own; a new fence (from the sequence)
/// only on a change of owner. When another node holds it, returns that node and its address
/// instead (owner column not null). No row: the row that stopped us was committed after this
/// statement's snapshot; asking again sees it.
const ACQUIRE: &str = concat!(
    "WITH taken AS (
         INSERT INTO leases AS l (thread_id, node_id, fence, expires_at)
         VALUES ($1, $2, nextval('lease_fences'), now() + $3::bigint * interval '1 millisecond')
         ON CONFLICT (thread_id) DO UPDATE
         SET fence = CASE WHEN l.node_id = excluded.node_id THEN l.fence ELSE excluded.fence END,
             node_id = excluded.node_id,
             expires_at = excluded.expires_at
         WHERE l.node_id = excluded.node_id OR l.expires_at <= now()
         RETURNING l.fence, l.expires_at
     )
     SELECT t.fence, ",
    ms!("t.expires_at"),
    ", NULL::text, NULL::text FROM taken t
     UNION ALL
     SELECT l.fence, ",
    ms!("l.expires_at"),
    ", l.node_id, n.address FROM leases l LEFT JOIN nodes n ON n.node_id = l.node_id
     WHERE l.thread_id = $1 AND NOT EXISTS (SELECT 1 FROM taken)"
);

/// Who holds an unexpired lease, and its address: a read.
const HOLDER: &str = concat!(
    "SELECT l.node_id, n.address, l.fence, ",
    ms!("l.expires_at"),
    " FROM leases l LEFT JOIN nodes n ON n.node_id = l.node_id
     WHERE l.thread_id = $1 AND l.expires_at > now()"
);

/// Renews the node's leases among those named (expired ones too: nobody took them), and says
/// which those were and until when.
const RENEW: &str = concat!(
    "WITH renewed AS (
         UPDATE leases SET expires_at = now() + $3::bigint * interval '1 millisecond'
         WHERE node_id = $1 AND thread_id = ANY($2::text[])
         RETURNING thread_id
     )
     SELECT coalesce(array_agg(thread_id), '{}'::text[]), ",
    ms!("now() + $3::bigint * interval '1 millisecond'"),
    " FROM renewed"
);

const RELEASE: &str = "DELETE FROM leases WHERE thread_id = $1 AND node_id = $2";

const RELEASE_MANY: &str = "DELETE FROM leases WHERE node_id = $1 AND thread_id = ANY($2::text[])";

pub(super) async fn register_node(db: &Db, node: &NodeInfo) -> Result<(), StoreError> {
    db.execute(REGISTER_NODE, &[&node.id.as_str(), &node.address]).await?;
    Ok(())
}

pub(super) async fn nodes(db: &Db) -> Result<Vec<NodeStatus>, StoreError> {
    let rows = db.query(NODES, &[]).await?;
    Ok(rows
        .iter()
        .map(|row| NodeStatus {
            id: NodeId::new(row.get::<_, String>(0)),
            address: row.get(1),
            heartbeat_at_ms: row.get(2),
            heartbeat_age_ms: row.get::<_, i64>(3).max(0) as u64,
            conversations: row.get::<_, i64>(4).max(0) as u64,
        })
        .collect())
}

pub(super) async fn acquire(
    db: &Db,
    conversation: &ConversationId,
    node: &NodeId,
    ttl: Duration,
) -> Result<Lease, StoreError> {
    let ttl = ttl_ms(ttl);
    for _ in 0..3 {
        let rows = db.query(ACQUIRE, &[&conversation.as_str(), &node.as_str(), &ttl]).await?;
        let Some(row) = rows.first() else { continue };
        let (fence, expires_at_ms): (i64, i64) = (row.get(0), row.get(1));
        return match row.get::<_, Option<String>>(2) {
            None => Ok(Lease {
                conversation: conversation.clone(),
                node: node.clone(),
                fence: Fence::from_db(fence),
                expires_at_ms,
            }),
            Some(owner) => Err(StoreError::OwnedElsewhere {
                thread_id: conversation.to_string(),
                node: owner.into(),
                address: row.get(3),
            }),
        };
    }
    Err(StoreError::Busy {
        backend: BACKEND,
        message: format!("the lease on {conversation} kept changing hands while {node} asked for it"),
    })
}

pub(super) async fn holder(db: &Db, conversation: &ConversationId) -> Result<Option<LeaseHolder>, StoreError> {
    let rows = db.query(HOLDER, &[&conversation.as_str()]).await?;
    Ok(rows.first().map(|row| LeaseHolder {
        node: NodeId::new(row.get::<_, String>(0)),
        address: row.get(1),
        fence: Fence::from_db(row.get(2)),
        expires_at_ms: row.get(3),
    }))
}

pub(super) async fn renew(
    db: &Db,
    node: &NodeId,
    conversations: &[ConversationId],
    ttl: Duration,
) -> Result<Renewal, StoreError> {
    let ids: Vec<&str> = conversations.iter().map(ConversationId::as_str).collect();
    let rows = db.query(RENEW, &[&node.as_str(), &ids, &ttl_ms(ttl)]).await?;
    let row = rows.first().ok_or_else(|| StoreError::Backend {
        backend: BACKEND,
        message: "renewing leases returned no row".to_owned(),
    })?;
    let held: Vec<ConversationId> = row.get::<_, Vec<String>>(0).into_iter().map(ConversationId::from).collect();
    Ok(Renewal::sort(conversations, &held, row.get(1)))
}

pub(super) async fn release(db: &Db, conversation: &ConversationId, node: &NodeId) -> Result<bool, StoreError> {
    Ok(db.execute(RELEASE, &[&conversation.as_str(), &node.as_str()]).await? > 0)
}

/// No round trip for none.
pub(super) async fn release_many(db: &Db, node: &NodeId, conversations: &[ConversationId]) -> Result<u64, StoreError> {
    if conversations.is_empty() {
        return Ok(0);
    }
    let ids: Vec<&str> = conversations.iter().map(ConversationId::as_str).collect();
    db.execute(RELEASE_MANY, &[&node.as_str(), &ids]).await
}
