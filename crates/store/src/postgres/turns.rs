//! `record_turns` in PostgreSQL: a whole batch in one statement, so one round trip and one
//! implicit transaction, whatever the number of turns, items and conversations.

use super::db::Db;
use crate::row::{encode_pending, to_json};
use crate::{StoreError, TurnRecord};
use std::collections::{HashMap, HashSet};

/// The batch goes in as arrays. In order:
/// 1. `checks`: the fences to check, (conversation, fence), for conversations that exist (a
///    write to one deleted meanwhile is skipped, fenced or not);
/// 2. `held`: the leases of those conversations, locked (`FOR SHARE`) until the statement
///    commits, so a takeover either waits for this write (and then reads it) or comes first
///    (and this write sees the new fence);
/// 3. `refused`: the checks whose fence is not the lease's; if there is one, nothing below
///    writes, and it is returned;
/// 4. `counted`: per conversation, `turns` and `updated_at_ms` (the database's clock) bumped and
///    `next_seq` moved past the new items, `last_turn` set to the batch's last turn of it that
///    codex finished or that added items (if any), `pending_calls` set to what the batch's last
///    turn of it that sets them says (if any); the row lock orders concurrent writers;
/// 5. `added`: the items, at `seq` = the conversation's first new position + their place
///    among its items in the batch.
const RECORD_TURNS: &str = "WITH checks AS (
         SELECT c.thread_id, c.fence FROM unnest($1::text[], $2::bigint[]) AS c(thread_id, fence)
         WHERE EXISTS (SELECT 1 FROM threads t WHERE t.thread_id = c.thread_id)
     ),
     held AS (
         SELECT l.thread_id, l.fence FROM leases l WHERE l.thread_id = ANY($1::text[]) FOR SHARE
     ),
     refused AS (
         SELECT c.thread_id, c.fence FROM checks c
         WHERE NOT EXISTS (SELECT 1 FROM held h WHERE h.thread_id = c.thread_id AND h.fence = c.fence)
     ),
     counted AS (
         UPDATE threads t
         SET turns = t.turns + u.completed,
             updated_at_ms = CASE WHEN u.completed > 0
                 THEN greatest(t.updated_at_ms, (extract(epoch FROM now()) * 1000)::bigint)
                 ELSE t.updated_at_ms END,
             next_seq = t.next_seq + u.items,
             last_turn = COALESCE(u.last_turn, t.last_turn),
             pending_calls = CASE WHEN u.set_pending THEN u.pending ELSE t.pending_calls END
         FROM unnest($3::text[], $4::bigint[], $5::bigint[], $10::text[], $11::boolean[], $12::text[])
             AS u(thread_id, completed, items, last_turn, set_pending, pending)
         WHERE t.thread_id = u.thread_id AND NOT EXISTS (SELECT 1 FROM refused)
         RETURNING t.thread_id, t.next_seq - u.items AS first_seq
     ),
     added AS (
         INSERT INTO thread_items (thread_id, seq, turn_id, item)
         SELECT i.thread_id, c.first_seq + i.pos, i.turn_id, i.item
         FROM unnest($6::text[], $7::bigint[], $8::text[], $9::text[]) AS i(thread_id, pos, turn_id, item)
         JOIN counted c ON c.thread_id = i.thread_id
     )
     SELECT thread_id, fence FROM refused LIMIT 1";

/// A batch as the statement's arrays.
#[derive(Default)]
struct Batch<'a> {
    check_threads: Vec<&'a str>,
    check_fences: Vec<i64>,
    threads: Vec<&'a str>,
    completed: Vec<i64>,
    counts: Vec<i64>,
    last_turns: Vec<Option<&'a str>>,
    set_pending: Vec<bool>,
    pending: Vec<Option<String>>,
    item_threads: Vec<&'a str>,
    item_positions: Vec<i64>,
    item_turns: Vec<&'a str>,
    item_texts: Vec<String>,
}

impl<'a> Batch<'a> {
    /// One entry per conversation (its turns in order), one per item, one per distinct fence.
    fn new(turns: &'a [TurnRecord]) -> Result<Self, StoreError> {
        let mut batch = Batch::default();
        let mut slot: HashMap<&str, usize> = HashMap::new();
        let mut fences: HashSet<(&str, i64)> = HashSet::new();
        for turn in turns {
            let id = turn.conversation.as_str();
            let n = *slot.entry(id).or_insert_with(|| {
                batch.threads.push(id);
                batch.completed.push(0);
                batch.counts.push(0);
                batch.last_turns.push(None);
                batch.set_pending.push(false);
                batch.pending.push(None);
                batch.threads.len() - 1
            });
            if let Some(fence) = turn.fence.map(crate::Fence::to_db) {
                if fences.insert((id, fence)) {
                    batch.check_threads.push(id);
                    batch.check_fences.push(fence);
                }
            }
            batch.completed[n] += i64::from(turn.completed);
            if turn.is_last_turn() {
                batch.last_turns[n] = Some(turn.turn_id.as_str());
            }
            if let Some(pending) = &turn.pending_calls {
                batch.set_pending[n] = true;
                batch.pending[n] = encode_pending(&turn.conversation, pending)?;
            }
            for item in &turn.items {
                let text = to_json(&turn.conversation, item)?;
                batch.item_threads.push(id);
                batch.item_positions.push(batch.counts[n]);
                batch.item_turns.push(turn.turn_id.as_str());
                batch.item_texts.push(text);
                batch.counts[n] += 1;
            }
        }
        Ok(batch)
    }
}

pub(super) async fn record_turns(db: &Db, turns: &[TurnRecord]) -> Result<(), StoreError> {
    if turns.is_empty() {
        return Ok(());
    }
    let batch = Batch::new(turns)?;
    let rows = db
        .query(
            RECORD_TURNS,
            &[
                &batch.check_threads,
                &batch.check_fences,
                &batch.threads,
                &batch.completed,
                &batch.counts,
                &batch.item_threads,
                &batch.item_positions,
                &batch.item_turns,
                &batch.item_texts,
                &batch.last_turns,
                &batch.set_pending,
                &batch.pending,
            ],
        )
        .await?;
    match rows.first() {
        Some(row) => Err(StoreError::Fenced { thread_id: row.get(0), fence: crate::Fence::from_db(row.get(1)) }),
        None => Ok(()),
    }
}
