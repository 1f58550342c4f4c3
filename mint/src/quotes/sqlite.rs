//! Batches on SQLite with the mint's own connection and cached statements.
//!
//! cdk-sqlite runs each statement on its connection's thread, preparing it anew, and its quote
//! API writes a row per statement and reads each quote back: storing and paying one quote cost
//! five to seven statements, each a hop between threads, which held the mint at ~5,500
//! quotes/s. This writer keeps a connection of its own to the same file, with its statements
//! prepared once, and writes a whole batch on one blocking thread in one transaction: the same
//! rows cdk's `add_mint_quote`, `kv_write` and `update_mint_quote` write, bound as cdk binds
//! them, read back by cdk like any other (the tests compare them). A quote created and paid in
//! the same batch is inserted as cdk's update leaves it, rather than inserted and then updated.
//!
//! It carries out the same [`plan_batch`] plan as the cdk path, and is exact under concurrency:
//! the transaction is `IMMEDIATE`, so it holds the store's write lock from its first read, and
//! nobody changes the quotes it planned on before it commits; a quote or payment that is there
//! anyway is skipped by `ON CONFLICT DO NOTHING`, and a quote's `amount_paid` grows only by
//! payments this batch inserted. Commits are as durable as cdk's (WAL, `synchronous=FULL`):
//! nothing is acknowledged on the stream before it. At start it checks that the tables have the
//! columns it writes; if cdk's schema ever differs, the mint keeps to cdk's API.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use cdk::mint::{MintQuote, QuoteId};
use ehash::CreateQuote;
use rusqlite::{params, Connection, OpenFlags, Transaction, TransactionBehavior};
use thiserror::Error;
use uuid::Uuid;

use super::batch::named_quotes;
use super::plan::{plan_batch, Held, NewPayment, NewQuote};
use super::retention::Prunable;
use super::written::{paid_updated_at, PaidRow, Pubkeys, Written, WrittenCreate, WRITTEN_COLUMNS};
use super::{index_entries, BatchResults, Batchable, QuoteBook};

/// cdk-sqlite's own connections wait as long for the write lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Error)]
pub enum SqliteBatchError {
    #[error("SQLite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error(
        "table {table} lacks the columns {missing:?} this mint writes (cdk's schema changed?)"
    )]
    Schema {
        table: &'static str,
        missing: Vec<&'static str>,
    },
    #[error("the batch writer's thread failed: {0}")]
    Thread(#[from] tokio::task::JoinError),
}

const QUOTE_AMOUNT: &str = "SELECT amount FROM mint_quote WHERE id = ?1";
const PAYMENTS_OF: &str = "SELECT payment_id FROM mint_quote_payments WHERE quote_id = ?1";
/// cdk's `add_mint_quote` (with `amount_paid`, for a quote paid in the same batch), but a quote
/// already there is left as it is.
const INSERT_QUOTE: &str = "INSERT INTO mint_quote (id, amount, unit, request, expiry, \
     request_lookup_id, pubkey, created_time, updated_at, last_checked, payment_method, \
     request_lookup_id_kind, extra_json, amount_paid) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14) \
     ON CONFLICT DO NOTHING";
/// cdk's `kv_write`: an upsert.
const WRITE_INDEX: &str = "INSERT INTO kv_store (primary_namespace, secondary_namespace, key, \
     value, created_time, updated_time) VALUES (?1, ?2, ?3, ?4, ?5, ?5) \
     ON CONFLICT (primary_namespace, secondary_namespace, key) \
     DO UPDATE SET value = excluded.value, updated_time = excluded.updated_time";
/// cdk's `update_mint_quote` for a payment: the payment row...
const RECORD_PAYMENT: &str = "INSERT INTO mint_quote_payments \
     (quote_id, payment_id, amount, timestamp) VALUES (?1, ?2, ?3, ?4) \
     ON CONFLICT (payment_id) DO NOTHING";
/// ...then the quote's `amount_paid` and `updated_at` (bumped past its last value, as cdk does),
/// by the payments inserted; what a PAID notification (NUT-17) says of the quote comes back.
const PAY_QUOTE: &str = "UPDATE mint_quote SET amount_paid = amount_paid + ?2, \
     updated_at = CASE WHEN ?3 > updated_at + 1 THEN ?3 ELSE updated_at + 1 END \
     WHERE id = ?1 \
     RETURNING id, request, unit, amount, expiry, pubkey, created_time, amount_paid, \
     amount_issued, updated_at";

/// Issued quotes created before ?1, oldest first (see `Retention`).
const PRUNABLE: &str = "SELECT id, pubkey FROM mint_quote \
     WHERE created_time < ?1 AND amount_paid > 0 AND amount_issued >= amount_paid \
     ORDER BY created_time LIMIT ?2";
const DELETE_INDEX: &str = "DELETE FROM kv_store \
     WHERE primary_namespace = ?1 AND secondary_namespace = ?2 AND key = ?3";
const DELETE_PAYMENTS: &str = "DELETE FROM mint_quote_payments WHERE quote_id = ?1";
const DELETE_ISSUANCES: &str = "DELETE FROM mint_quote_issued WHERE quote_id = ?1";
const DELETE_QUOTE: &str = "DELETE FROM mint_quote WHERE id = ?1";

/// A connection of its own to the mint's SQLite store, for writing batches.
pub struct SqliteBatchWriter {
    /// Used on blocking threads, one batch at a time.
    connection: Arc<Mutex<Connection>>,
    committed: AtomicU64,
}

impl SqliteBatchWriter {
    /// Opens the store at `path`, after cdk has made its tables, and checks they have the
    /// columns it writes.
    pub async fn open(path: &Path) -> Result<Self, SqliteBatchError> {
        let path = path.to_owned();
        let connection = tokio::task::spawn_blocking(move || open(&path)).await??;
        Ok(Self {
            connection: Arc::new(Mutex::new(connection)),
            committed: AtomicU64::new(0),
        })
    }

    /// Batches this writer has committed.
    pub fn committed(&self) -> u64 {
        self.committed.load(Ordering::Relaxed)
    }

    /// Applies `messages` in one transaction (see the module docs); `Err` commits nothing.
    pub(super) async fn apply(
        &self,
        book: &QuoteBook,
        messages: &[Batchable<'_>],
    ) -> Result<BatchResults, SqliteBatchError> {
        // The blocking thread outlives this borrow of the messages: it gets a copy.
        let owned: Vec<OwnedMessage> = messages.iter().map(OwnedMessage::of).collect();
        let writing_book = book.clone();
        let written = self
            .on_connection(move |connection| {
                let messages: Vec<Batchable<'_>> =
                    owned.iter().map(OwnedMessage::as_batchable).collect();
                write(connection, &writing_book, &messages)
            })
            .await?;
        self.committed.fetch_add(1, Ordering::Relaxed);
        Ok(book.announce(written))
    }

    /// Deletes up to `limit` issued quotes created before `created_before`, with their
    /// payments, issuances and index entries, in one transaction; how many.
    pub(super) async fn prune_issued(
        &self,
        created_before: u64,
        limit: usize,
    ) -> Result<u64, SqliteBatchError> {
        self.on_connection(move |connection| prune(connection, created_before, limit))
            .await
    }

    /// Runs `work` on the writer's connection, on a blocking thread, one at a time.
    async fn on_connection<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Connection) -> Result<T, SqliteBatchError> + Send + 'static,
    ) -> Result<T, SqliteBatchError> {
        let connection = self.connection.clone();
        tokio::task::spawn_blocking(move || {
            // A panic mid-transaction rolled it back as it unwound: the connection is as good
            // as before.
            let mut connection = connection.lock().unwrap_or_else(PoisonError::into_inner);
            work(&mut connection)
        })
        .await?
    }
}

/// See [`SqliteBatchWriter::prune_issued`]. The transaction is `IMMEDIATE`: no wallet mints a
/// quote between our reading it issued and deleting it.
fn prune(
    connection: &mut Connection,
    created_before: u64,
    limit: usize,
) -> Result<u64, SqliteBatchError> {
    let tx = connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let quotes: Vec<(String, Option<String>)> = tx
        .prepare_cached(PRUNABLE)?
        .query_map(
            params![
                i64::try_from(created_before).unwrap_or(i64::MAX),
                limit as i64
            ],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )?
        .collect::<Result<_, _>>()?;
    delete_quotes(&tx, &quotes)?;
    tx.commit()?;
    Ok(quotes.len() as u64)
}

/// Deletes the quotes (id, locking key) with their payments, issuances and index entries.
fn delete_quotes(
    tx: &Transaction<'_>,
    quotes: &[(String, Option<String>)],
) -> Result<(), SqliteBatchError> {
    let mut payments_of = tx.prepare_cached(PAYMENTS_OF)?;
    let mut delete_index = tx.prepare_cached(DELETE_INDEX)?;
    let mut delete_payments = tx.prepare_cached(DELETE_PAYMENTS)?;
    let mut delete_issuances = tx.prepare_cached(DELETE_ISSUANCES)?;
    let mut delete_quote = tx.prepare_cached(DELETE_QUOTE)?;
    for (id, pubkey) in quotes {
        let payment_ids = payments_of
            .query_map([id], |row| row.get::<_, String>(0))?
            .collect::<Result<Vec<String>, _>>()?;
        let quote = Prunable::new(
            id.clone(),
            pubkey.clone(),
            payment_ids.iter().map(String::as_str),
        );
        for (namespace, secondary, key) in quote.index_keys() {
            delete_index.execute(params![namespace, secondary, key])?;
        }
        delete_payments.execute([id])?;
        delete_issuances.execute([id])?;
        delete_quote.execute([id])?;
    }
    Ok(())
}

/// A batch's message, owned, for the blocking thread.
enum OwnedMessage {
    Create(CreateQuote),
    Pay(Vec<Uuid>),
}

impl OwnedMessage {
    fn of(message: &Batchable<'_>) -> Self {
        match *message {
            Batchable::Create(create) => OwnedMessage::Create(create.clone()),
            Batchable::Pay(ids) => OwnedMessage::Pay(ids.to_vec()),
        }
    }

    fn as_batchable(&self) -> Batchable<'_> {
        match self {
            OwnedMessage::Create(create) => Batchable::Create(create),
            OwnedMessage::Pay(ids) => Batchable::Pay(ids),
        }
    }
}

/// The mint's store as cdk opens it: WAL, `synchronous=FULL`, waiting for the write lock.
fn open(path: &Path) -> Result<Connection, SqliteBatchError> {
    // Never creates the file: cdk has, with its tables.
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_URI
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let connection = Connection::open_with_flags(path, flags)?;
    connection.busy_timeout(BUSY_TIMEOUT)?;
    connection.pragma_update(None, "journal_mode", "WAL")?;
    connection.pragma_update(None, "synchronous", "FULL")?;
    check_schema(&connection)?;
    Ok(connection)
}

/// Checks the tables have the columns this writer writes and reads.
fn check_schema(connection: &Connection) -> Result<(), SqliteBatchError> {
    let mut columns_of = connection.prepare("SELECT name FROM pragma_table_info(?1)")?;
    for (table, columns) in WRITTEN_COLUMNS {
        let present = columns_of
            .query_map([table], |row| row.get::<_, String>(0))?
            .collect::<Result<HashSet<String>, _>>()?;
        let missing: Vec<&'static str> = columns
            .iter()
            .copied()
            .filter(|column| !present.contains(*column))
            .collect();
        if !missing.is_empty() {
            return Err(SqliteBatchError::Schema { table, missing });
        }
    }
    Ok(())
}

/// Plans and writes the batch, committed.
fn write(
    connection: &mut Connection,
    book: &QuoteBook,
    messages: &[Batchable<'_>],
) -> Result<Written, SqliteBatchError> {
    let tx = connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let plan = plan_batch(
        messages,
        held_quotes(&tx, messages)?,
        book.refuse_created_before(),
    );
    let now = cdk::util::unix_time() as i64;
    // The payments go in before the quotes this batch creates, so that a quote created and paid
    // in one batch is written once, as cdk's update would leave it: its foreign key is checked
    // at the commit.
    tx.pragma_update(None, "defer_foreign_keys", true)?;
    let (payments, mut paid) = record_payments(&tx, &plan.payments, now)?;
    let mut keys = Pubkeys::default();
    let mut paid_quotes = Vec::with_capacity(paid.len());
    let mut creates = Vec::with_capacity(plan.creates.len());
    for Inserted { written, paid_row } in
        insert_quotes(&tx, book, &plan.creates, now, &mut paid, &mut keys)?
    {
        paid_quotes.extend(paid_row.and_then(|row| book.paid_quote(row, &mut keys)));
        creates.push(written);
    }
    paid_quotes.extend(pay_stored(&tx, book, paid, now, &mut keys)?);
    tx.commit()?;
    Ok(Written {
        results: plan.results,
        creates,
        payments,
        paid_quotes,
    })
}

/// What [`record_payments`] did: for each payment, its update and whether it was recorded; and
/// what each quote was paid, in id order.
type RecordedPayments = (Vec<(usize, bool)>, BTreeMap<Uuid, i64>);

/// Records the payments (those already there are skipped).
fn record_payments(
    tx: &Transaction<'_>,
    planned: &[NewPayment],
    now: i64,
) -> Result<RecordedPayments, SqliteBatchError> {
    let mut record = tx.prepare_cached(RECORD_PAYMENT)?;
    let mut payments = Vec::with_capacity(planned.len());
    let mut paid: BTreeMap<Uuid, i64> = BTreeMap::new();
    for payment in planned {
        let amount = payment.amount as i64;
        let recorded = record.execute(params![
            payment.quote_id.to_string(),
            payment.payment_id,
            amount,
            now,
        ])? == 1;
        if recorded {
            *paid.entry(payment.quote_id).or_default() += amount;
        }
        payments.push((payment.message, recorded));
    }
    Ok((payments, paid))
}

/// A quote the batch inserts, and its row if the batch also paid it.
struct Inserted {
    written: WrittenCreate,
    paid_row: Option<PaidRow>,
}

/// Inserts the new quotes and their index entries. A quote with a payment this batch recorded
/// (taken out of `paid`) is inserted as cdk's `update_mint_quote` leaves it after inserting it
/// UNPAID: `amount_paid` the payments, `updated_at` bumped past its last value.
fn insert_quotes(
    tx: &Transaction<'_>,
    book: &QuoteBook,
    planned: &[NewQuote<'_>],
    now: i64,
    paid: &mut BTreeMap<Uuid, i64>,
    keys: &mut Pubkeys,
) -> Result<Vec<Inserted>, SqliteBatchError> {
    let mut insert = tx.prepare_cached(INSERT_QUOTE)?;
    let mut write_index = tx.prepare_cached(WRITE_INDEX)?;
    let mut inserted_quotes = Vec::with_capacity(planned.len());
    for new in planned {
        let id = QuoteId::from(new.create.quote_id);
        let quote = book.unpaid_quote(new.create, id, new.unit.clone());
        let pubkey = quote.pubkey.map(|key| {
            let hex = key.to_string();
            keys.remember(&hex, key);
            hex
        });
        let amount_paid = paid.get(&new.create.quote_id).copied();
        let updated_at = match amount_paid {
            Some(_) => paid_updated_at(quote.updated_at(), now),
            None => quote.updated_at() as i64,
        };
        // Bound as cdk-sql-common's `add_mint_quote` binds them.
        let inserted = insert.execute(params![
            quote.id.to_string(),
            quote.amount.as_ref().map(|amount| amount.value() as i64),
            quote.unit.to_string(),
            quote.request,
            quote.expiry as i64,
            quote.request_lookup_id.to_string(),
            pubkey,
            quote.created_time as i64,
            updated_at,
            quote.last_checked() as i64,
            quote.payment_method.to_string(),
            quote.request_lookup_id.kind().to_string(),
            quote.extra_json.as_ref().map(ToString::to_string),
            amount_paid.unwrap_or(0),
        ])? == 1;
        for entry in index_entries(new.create, &new.unit) {
            write_index.execute(params![
                entry.namespace,
                entry.secondary,
                entry.key,
                &entry.value[..],
                now,
            ])?;
        }
        // A quote that was there after all is paid by an update instead.
        let paid_row = match amount_paid {
            Some(amount_paid) if inserted => {
                paid.remove(&new.create.quote_id);
                Some(PaidRow::inserted(
                    &quote,
                    pubkey.clone(),
                    amount_paid,
                    updated_at,
                ))
            }
            _ => None,
        };
        inserted_quotes.push(Inserted {
            written: WrittenCreate {
                message: new.message,
                quote,
                inserted,
            },
            paid_row,
        });
    }
    Ok(inserted_quotes)
}

/// cdk's `update_mint_quote` for the payments recorded on quotes stored before: the quotes as
/// they are after it.
fn pay_stored(
    tx: &Transaction<'_>,
    book: &QuoteBook,
    paid: BTreeMap<Uuid, i64>,
    now: i64,
    keys: &mut Pubkeys,
) -> Result<Vec<MintQuote>, SqliteBatchError> {
    let mut pay = tx.prepare_cached(PAY_QUOTE)?;
    let mut paid_quotes = Vec::with_capacity(paid.len());
    for (id, amount) in paid {
        let mut rows = pay.query(params![id.to_string(), amount, now])?;
        while let Some(row) = rows.next()? {
            let row = PaidRow {
                id: row.get(0)?,
                request: row.get(1)?,
                unit: row.get(2)?,
                amount: row.get(3)?,
                expiry: row.get(4)?,
                pubkey: row.get(5)?,
                created_time: row.get(6)?,
                amount_paid: row.get(7)?,
                amount_issued: row.get(8)?,
                updated_at: row.get(9)?,
            };
            paid_quotes.extend(book.paid_quote(row, keys));
        }
    }
    Ok(paid_quotes)
}

/// The quotes the messages name that the store holds, with the payments recorded on them.
fn held_quotes(
    tx: &Transaction<'_>,
    messages: &[Batchable<'_>],
) -> Result<HashMap<Uuid, Held>, SqliteBatchError> {
    let mut amount_of = tx.prepare_cached(QUOTE_AMOUNT)?;
    let mut payments_of = tx.prepare_cached(PAYMENTS_OF)?;
    let mut held = HashMap::new();
    for id in named_quotes(messages) {
        let QuoteId::UUID(uuid) = id else { continue };
        let id = uuid.to_string();
        let mut rows = amount_of.query([&id])?;
        let Some(row) = rows.next()? else { continue };
        let amount: Option<i64> = row.get(0)?;
        let payment_ids = payments_of
            .query_map([&id], |row| row.get::<_, String>(0))?
            .collect::<Result<HashSet<String>, _>>()?;
        let quote = Held {
            amount: amount.map(|amount| amount as u64),
            payment_ids,
        };
        held.insert(uuid, quote);
    }
    Ok(held)
}
