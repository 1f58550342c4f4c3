//! Batches on PostgreSQL as a handful of set-based statements.
//!
//! cdk-postgres prepares every statement before running it (two round trips), and its quote API
//! writes a row per statement: storing and paying one quote costs ten round trips, which held
//! the mint at ~800 quotes/s on PostgreSQL. This writer keeps its own connection with its
//! statements prepared once, and writes a whole batch with one statement per table, each taking
//! arrays (`unnest`): the same rows cdk's `add_mint_quote`, `kv_write` and `update_mint_quote`
//! write, in cdk's schema, read back by cdk like any other (the tests compare them).
//!
//! A quote created and paid in the same batch is inserted as cdk's update leaves it, rather than
//! inserted and then updated: an update writes a second version of the row, and of every one
//! of its index entries when its page is full, which cost as much as the insert.
//!
//! It carries out the same [`plan_batch`] plan as the cdk path, and is exact under concurrency:
//! the quotes a batch names are row-locked; a quote or payment another worker inserted meanwhile
//! is skipped by `ON CONFLICT DO NOTHING`, and a quote's `amount_paid` grows only by payments
//! this batch actually inserted. At start it checks that the tables have the columns it writes;
//! if cdk's schema ever differs, the mint keeps to cdk's API.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};

use cdk::mint::{MintQuote, QuoteId};
use thiserror::Error;
use tokio::sync::Mutex;
use tokio_postgres::{Client, NoTls, Statement};
use uuid::Uuid;

use super::batch::named_quotes;
use super::plan::{plan_batch, Held, NewPayment, NewQuote};
use super::retention::Prunable;
use super::written::{paid_updated_at, PaidRow, Pubkeys, Written, WrittenCreate, WRITTEN_COLUMNS};
use super::{index_entries, BatchResults, Batchable, QuoteBook};

#[derive(Debug, Error)]
pub enum PostgresBatchError {
    #[error("PostgreSQL: {0}")]
    Postgres(#[from] tokio_postgres::Error),
    #[error(
        "table {table} lacks the columns {missing:?} this mint writes (cdk's schema changed?)"
    )]
    Schema {
        table: &'static str,
        missing: Vec<&'static str>,
    },
}

const LOCK_QUOTES: &str =
    "SELECT id, amount::bigint FROM mint_quote WHERE id = ANY($1) ORDER BY id FOR UPDATE";
/// What a PAID notification (NUT-17) says about a quote, read once the batch's writes are in.
const PAID_QUOTES: &str = "SELECT id, request, unit, amount::bigint, expiry::bigint, pubkey, \
     created_time::bigint, amount_paid::bigint, amount_issued::bigint, updated_at::bigint \
     FROM mint_quote WHERE id = ANY($1)";
const PAYMENTS_OF: &str =
    "SELECT quote_id, payment_id FROM mint_quote_payments WHERE quote_id = ANY($1)";
/// cdk's `add_mint_quote` (with `amount_paid`, for a quote paid in the same batch), but a quote
/// already there is left as it is.
const INSERT_QUOTES: &str = "INSERT INTO mint_quote (id, amount, unit, request, expiry, \
     request_lookup_id, pubkey, created_time, updated_at, last_checked, payment_method, \
     request_lookup_id_kind, extra_json, amount_paid) \
     SELECT * FROM unnest($1::text[], $2::bigint[], $3::text[], $4::text[], $5::bigint[], \
     $6::text[], $7::text[], $8::bigint[], $9::bigint[], $10::bigint[], $11::text[], \
     $12::text[], $13::text[], $14::bigint[]) \
     ON CONFLICT DO NOTHING RETURNING id";
/// The payment rows of quotes this batch inserted already paid. No other writer can hold them:
/// its own row would need the quote, which is not committed yet; were one there all the same,
/// the batch fails and is applied again, with the quote stored.
const INSERT_PAYMENTS: &str = "INSERT INTO mint_quote_payments \
     (quote_id, payment_id, amount, timestamp) \
     SELECT q, p, a, $4::bigint FROM unnest($1::text[], $2::text[], $3::bigint[]) AS rows(q, p, a)";
/// cdk's `kv_write`: an upsert.
const WRITE_INDEXES: &str = "INSERT INTO kv_store (primary_namespace, secondary_namespace, key, \
     value, created_time, updated_time) \
     SELECT n, s, k, v, $5::bigint, $5::bigint FROM unnest($1::text[], $2::text[], $3::text[], $4::bytea[]) \
     AS rows(n, s, k, v) \
     ON CONFLICT (primary_namespace, secondary_namespace, key) \
     DO UPDATE SET value = excluded.value, updated_time = excluded.updated_time";
/// cdk's `update_mint_quote` for a payment on a quote stored before: the payment row, then the
/// quote's `amount_paid` and `updated_at` (bumped past its last value, as cdk does), for the
/// payments inserted.
const RECORD_PAYMENTS: &str = "WITH inserted AS ( \
       INSERT INTO mint_quote_payments (quote_id, payment_id, amount, timestamp) \
       SELECT q, p, a, $4::bigint FROM unnest($1::text[], $2::text[], $3::bigint[]) AS rows(q, p, a) \
       ON CONFLICT (payment_id) DO NOTHING RETURNING quote_id, amount \
     ), paid AS ( \
       SELECT quote_id, sum(amount) AS amount FROM inserted GROUP BY quote_id \
     ) \
     UPDATE mint_quote SET amount_paid = mint_quote.amount_paid + paid.amount, \
       updated_at = CASE WHEN $4::bigint > mint_quote.updated_at + 1 THEN $4::bigint \
                         ELSE mint_quote.updated_at + 1 END \
     FROM paid WHERE mint_quote.id = paid.quote_id RETURNING mint_quote.id";

/// Deletes up to $2 issued quotes created before $1, oldest first, with their payments and
/// issuances (the foreign keys are checked at the statement's end, after all three deletes);
/// returns each with its locking key and payment ids, for its index entries. `SKIP LOCKED`: a
/// quote a wallet is minting right now is left for the next round.
const PRUNE_ISSUED: &str = "WITH prunable AS ( \
       SELECT id, pubkey FROM mint_quote \
       WHERE created_time < $1::bigint AND amount_paid > 0 AND amount_issued >= amount_paid \
       ORDER BY created_time LIMIT $2::bigint FOR UPDATE SKIP LOCKED \
     ), payments AS ( \
       DELETE FROM mint_quote_payments USING prunable \
       WHERE mint_quote_payments.quote_id = prunable.id \
       RETURNING mint_quote_payments.quote_id, mint_quote_payments.payment_id \
     ), issuances AS ( \
       DELETE FROM mint_quote_issued USING prunable WHERE mint_quote_issued.quote_id = prunable.id \
     ), quotes AS ( \
       DELETE FROM mint_quote USING prunable WHERE mint_quote.id = prunable.id \
     ) \
     SELECT prunable.id, prunable.pubkey, payments.payment_id \
     FROM prunable LEFT JOIN payments ON payments.quote_id = prunable.id";
const DELETE_INDEXES: &str = "DELETE FROM kv_store USING \
     unnest($1::text[], $2::text[], $3::text[]) AS rows(n, s, k) \
     WHERE primary_namespace = rows.n AND secondary_namespace = rows.s AND key = rows.k";

struct Connection {
    client: Client,
    lock_quotes: Statement,
    payments_of: Statement,
    paid_quotes: Statement,
    insert_quotes: Statement,
    insert_payments: Statement,
    write_indexes: Statement,
    record_payments: Statement,
}

/// A connection of its own to the mint's PostgreSQL store, for writing batches.
pub struct PostgresBatchWriter {
    url: String,
    connection: Mutex<Option<Connection>>,
    committed: AtomicU64,
}

impl PostgresBatchWriter {
    /// Connects to the store at `url` (cdk-postgres's form: libpq keywords, plus `schema=`),
    /// after cdk has made its tables, and checks they have the columns it writes.
    pub async fn connect(url: &str) -> Result<Self, PostgresBatchError> {
        let connection = Connection::open(url).await?;
        Ok(Self {
            url: url.to_owned(),
            connection: Mutex::new(Some(connection)),
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
    ) -> Result<BatchResults, PostgresBatchError> {
        let mut slot = self.connection.lock().await;
        let connection = self.live(&mut slot).await?;
        let written = connection.write(book, messages).await?;
        self.committed.fetch_add(1, Ordering::Relaxed);
        drop(slot);
        Ok(book.announce(written))
    }

    /// Deletes up to `limit` issued quotes created before `created_before`, with their
    /// payments, issuances and index entries, in one transaction; how many.
    pub(super) async fn prune_issued(
        &self,
        created_before: u64,
        limit: usize,
    ) -> Result<u64, PostgresBatchError> {
        let mut slot = self.connection.lock().await;
        let connection = self.live(&mut slot).await?;
        connection.prune_issued(created_before, limit).await
    }

    /// The connection in `slot`, opened again if it closed (PostgreSQL restarted, say).
    async fn live<'a>(
        &self,
        slot: &'a mut Option<Connection>,
    ) -> Result<&'a mut Connection, PostgresBatchError> {
        let connection = match slot.take() {
            Some(connection) if !connection.client.is_closed() => connection,
            _ => Connection::open(&self.url).await?,
        };
        Ok(slot.insert(connection))
    }
}

impl Connection {
    async fn prune_issued(
        &mut self,
        created_before: u64,
        limit: usize,
    ) -> Result<u64, PostgresBatchError> {
        let tx = self.client.transaction().await?;
        let mut quotes: HashMap<String, (Option<String>, Vec<String>)> = HashMap::new();
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 2] = [
            &(i64::try_from(created_before).unwrap_or(i64::MAX)),
            &(limit as i64),
        ];
        for row in tx.query(PRUNE_ISSUED, &params).await? {
            let quote = quotes
                .entry(row.get(0))
                .or_insert_with(|| (row.get(1), Vec::new()));
            quote.1.extend(row.get::<_, Option<String>>(2));
        }
        let (mut namespaces, mut secondaries, mut keys) = (Vec::new(), Vec::new(), Vec::new());
        for (id, (pubkey, payment_ids)) in &quotes {
            let quote = Prunable::new(
                id.clone(),
                pubkey.clone(),
                payment_ids.iter().map(String::as_str),
            );
            for (namespace, secondary, key) in quote.index_keys() {
                namespaces.push(namespace);
                secondaries.push(secondary);
                keys.push(key.to_owned());
            }
        }
        if !keys.is_empty() {
            tx.execute(DELETE_INDEXES, &[&namespaces, &secondaries, &keys])
                .await?;
        }
        tx.commit().await?;
        Ok(quotes.len() as u64)
    }

    async fn open(url: &str) -> Result<Self, PostgresBatchError> {
        let (schema, config) = split_schema(url);
        let (client, connection) = tokio_postgres::connect(&config, NoTls).await?;
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::warn!(%error, "the batch writer's PostgreSQL connection closed");
            }
        });
        if let Some(schema) = schema {
            let quoted = schema.replace('"', "\"\"");
            client
                .batch_execute(&format!("SET search_path TO \"{quoted}\""))
                .await?;
        }
        // Statements are prepared while the tables may be empty: a generic plan made then
        // would scan whole tables once they are not. Plan each execution for its arguments.
        client
            .batch_execute("SET plan_cache_mode = force_custom_plan")
            .await?;
        check_schema(&client).await?;
        Ok(Self {
            lock_quotes: client.prepare(LOCK_QUOTES).await?,
            payments_of: client.prepare(PAYMENTS_OF).await?,
            paid_quotes: client.prepare(PAID_QUOTES).await?,
            insert_quotes: client.prepare(INSERT_QUOTES).await?,
            insert_payments: client.prepare(INSERT_PAYMENTS).await?,
            write_indexes: client.prepare(WRITE_INDEXES).await?,
            record_payments: client.prepare(RECORD_PAYMENTS).await?,
            client,
        })
    }

    /// Plans and writes the batch, committed.
    async fn write<'a>(
        &mut self,
        book: &QuoteBook,
        messages: &[Batchable<'a>],
    ) -> Result<Written, PostgresBatchError> {
        let named: Vec<String> = named_quotes(messages)
            .iter()
            .map(ToString::to_string)
            .collect();
        let tx = self.client.transaction().await?;
        let mut held: HashMap<Uuid, Held> = HashMap::new();
        for row in tx.query(&self.lock_quotes, &[&named]).await? {
            if let Ok(id) = Uuid::parse_str(row.get::<_, &str>(0)) {
                let amount: Option<i64> = row.get(1);
                held.entry(id).or_default().amount = amount.map(|amount| amount as u64);
            }
        }
        for row in tx.query(&self.payments_of, &[&named]).await? {
            if let Ok(id) = Uuid::parse_str(row.get::<_, &str>(0)) {
                if let Some(held) = held.get_mut(&id) {
                    held.payment_ids.insert(row.get::<_, String>(1));
                }
            }
        }
        let plan = plan_batch(messages, held, book.refuse_created_before());

        let now = cdk::util::unix_time() as i64;
        let new_quotes: Vec<MintQuote> = plan
            .creates
            .iter()
            .map(|new| {
                let id = QuoteId::from(new.create.quote_id);
                book.unpaid_quote(new.create, id, new.unit.clone())
            })
            .collect();
        // What this batch pays each quote it creates: inserted with it, if the insert is ours.
        let mut paid_at_insert: HashMap<Uuid, i64> = plan
            .creates
            .iter()
            .map(|new| (new.create.quote_id, 0))
            .collect();
        for payment in &plan.payments {
            if let Some(paid) = paid_at_insert.get_mut(&payment.quote_id) {
                *paid += payment.amount as i64;
            }
        }
        paid_at_insert.retain(|_, paid| *paid > 0);
        let mut inserted = HashSet::new();
        let mut paid_quotes = Vec::new();
        let mut keys = Pubkeys::default();
        if !plan.creates.is_empty() {
            let rows = QuoteRows::of(&new_quotes, &paid_at_insert, now);
            let params: [&(dyn tokio_postgres::types::ToSql + Sync); 14] = [
                &rows.id,
                &rows.amount,
                &rows.unit,
                &rows.request,
                &rows.expiry,
                &rows.request_lookup_id,
                &rows.pubkey,
                &rows.created_time,
                &rows.updated_at,
                &rows.last_checked,
                &rows.payment_method,
                &rows.request_lookup_id_kind,
                &rows.extra_json,
                &rows.amount_paid,
            ];
            for row in tx.query(&self.insert_quotes, &params).await? {
                if let Ok(id) = Uuid::parse_str(row.get::<_, &str>(0)) {
                    inserted.insert(id);
                }
            }
            let indexes = IndexRows::of(&plan.creates);
            tx.execute(
                &self.write_indexes,
                &[
                    &indexes.namespace,
                    &indexes.secondary,
                    &indexes.key,
                    &indexes.value,
                    &now,
                ],
            )
            .await?;
            for (row, quote) in new_quotes.iter().enumerate() {
                let ours = matches!(&quote.id, QuoteId::UUID(id) if inserted.contains(id));
                if !ours || rows.amount_paid[row] == 0 {
                    continue;
                }
                if let (Some(key), Some(hex)) = (quote.pubkey, &rows.pubkey[row]) {
                    keys.remember(hex, key);
                }
                paid_quotes.extend(book.paid_quote(rows.paid_row(row), &mut keys));
            }
        }
        // A quote another writer inserted meanwhile is paid as one stored before.
        paid_at_insert.retain(|id, _| inserted.contains(id));
        let (with_insert, on_stored): (Vec<&NewPayment>, Vec<&NewPayment>) = plan
            .payments
            .iter()
            .partition(|payment| paid_at_insert.contains_key(&payment.quote_id));
        if !with_insert.is_empty() {
            let rows = PaymentRows::of(&with_insert);
            tx.execute(
                &self.insert_payments,
                &[&rows.quote_id, &rows.payment_id, &rows.amount, &now],
            )
            .await?;
        }
        let mut newly_paid: HashSet<Uuid> = paid_at_insert.keys().copied().collect();
        if !on_stored.is_empty() {
            let rows = PaymentRows::of(&on_stored);
            let mut paid_now = Vec::new();
            for row in tx
                .query(
                    &self.record_payments,
                    &[&rows.quote_id, &rows.payment_id, &rows.amount, &now],
                )
                .await?
            {
                if let Ok(id) = Uuid::parse_str(row.get::<_, &str>(0)) {
                    newly_paid.insert(id);
                    paid_now.push(id.to_string());
                }
            }
            if !paid_now.is_empty() {
                let rows = tx.query(&self.paid_quotes, &[&paid_now]).await?;
                paid_quotes.extend(
                    rows.iter()
                        .filter_map(|row| book.paid_quote(paid_row(row), &mut keys)),
                );
            }
        }
        tx.commit().await?;
        Ok(Written {
            creates: plan
                .creates
                .iter()
                .zip(new_quotes)
                .map(|(new, quote)| WrittenCreate {
                    message: new.message,
                    quote,
                    inserted: inserted.contains(&new.create.quote_id),
                })
                .collect(),
            payments: plan
                .payments
                .iter()
                .map(|payment| (payment.message, newly_paid.contains(&payment.quote_id)))
                .collect(),
            results: plan.results,
            paid_quotes,
        })
    }
}

/// A row of [`PAID_QUOTES`].
fn paid_row(row: &tokio_postgres::Row) -> PaidRow {
    PaidRow {
        id: row.get(0),
        request: row.get(1),
        unit: row.get(2),
        amount: row.get(3),
        expiry: row.get(4),
        pubkey: row.get(5),
        created_time: row.get(6),
        amount_paid: row.get(7),
        amount_issued: row.get(8),
        updated_at: row.get(9),
    }
}

/// The new quotes as columns, from the cdk quotes the cdk path would store, bound as cdk's
/// `add_mint_quote` binds them; a quote this batch also pays is stored as cdk's
/// `update_mint_quote` would leave it.
#[derive(Default)]
struct QuoteRows<'a> {
    quotes: &'a [MintQuote],
    id: Vec<String>,
    amount: Vec<Option<i64>>,
    unit: Vec<String>,
    request: Vec<String>,
    expiry: Vec<i64>,
    request_lookup_id: Vec<String>,
    pubkey: Vec<Option<String>>,
    created_time: Vec<i64>,
    updated_at: Vec<i64>,
    last_checked: Vec<i64>,
    payment_method: Vec<String>,
    request_lookup_id_kind: Vec<String>,
    extra_json: Vec<Option<String>>,
    amount_paid: Vec<i64>,
}

impl<'a> QuoteRows<'a> {
    /// `quotes`, each paid what `paid` says at `now` (nothing if it is not there).
    fn of(quotes: &'a [MintQuote], paid: &HashMap<Uuid, i64>, now: i64) -> Self {
        let mut rows = Self {
            quotes,
            ..Self::default()
        };
        for quote in quotes {
            let amount_paid = match &quote.id {
                QuoteId::UUID(id) => paid.get(id).copied(),
                _ => None,
            };
            rows.id.push(quote.id.to_string());
            rows.amount
                .push(quote.amount.as_ref().map(|amount| amount.value() as i64));
            rows.unit.push(quote.unit.to_string());
            rows.request.push(quote.request.clone());
            rows.expiry.push(quote.expiry as i64);
            rows.request_lookup_id
                .push(quote.request_lookup_id.to_string());
            rows.pubkey.push(quote.pubkey.map(|key| key.to_string()));
            rows.created_time.push(quote.created_time as i64);
            rows.updated_at.push(match amount_paid {
                Some(_) => paid_updated_at(quote.updated_at(), now),
                None => quote.updated_at() as i64,
            });
            rows.last_checked.push(quote.last_checked() as i64);
            rows.payment_method.push(quote.payment_method.to_string());
            rows.request_lookup_id_kind
                .push(quote.request_lookup_id.kind().to_string());
            rows.extra_json
                .push(quote.extra_json.as_ref().map(ToString::to_string));
            rows.amount_paid.push(amount_paid.unwrap_or(0));
        }
        rows
    }

    /// Row `row` as reading it back after the insert would give it.
    fn paid_row(&self, row: usize) -> PaidRow {
        PaidRow::inserted(
            &self.quotes[row],
            self.pubkey[row].clone(),
            self.amount_paid[row],
            self.updated_at[row],
        )
    }
}

/// Payments as columns.
struct PaymentRows<'a> {
    quote_id: Vec<String>,
    payment_id: Vec<&'a str>,
    amount: Vec<i64>,
}

impl<'a> PaymentRows<'a> {
    fn of(payments: &[&'a NewPayment]) -> Self {
        Self {
            quote_id: payments.iter().map(|p| p.quote_id.to_string()).collect(),
            payment_id: payments.iter().map(|p| p.payment_id.as_str()).collect(),
            amount: payments.iter().map(|p| p.amount as i64).collect(),
        }
    }
}

/// The new quotes' index entries, as [`super::write_indexes`] writes them.
#[derive(Default)]
struct IndexRows {
    namespace: Vec<&'static str>,
    secondary: Vec<String>,
    key: Vec<String>,
    value: Vec<Vec<u8>>,
}

impl IndexRows {
    fn of(creates: &[NewQuote<'_>]) -> Self {
        let mut rows = Self::default();
        for entry in creates
            .iter()
            .flat_map(|new| index_entries(new.create, &new.unit))
        {
            rows.namespace.push(entry.namespace);
            rows.secondary.push(entry.secondary);
            rows.key.push(entry.key);
            rows.value.push(entry.value.to_vec());
        }
        rows
    }
}

/// cdk-postgres's connection string minus its own `schema=` keyword, and that schema.
fn split_schema(url: &str) -> (Option<String>, String) {
    let mut schema = None;
    let rest: Vec<&str> = url
        .split_whitespace()
        .filter(|token| match token.strip_prefix("schema=") {
            Some(name) => {
                schema = Some(name.to_owned());
                false
            }
            None => true,
        })
        .collect();
    (schema, rest.join(" "))
}

/// Checks the tables have the columns this writer writes and reads.
async fn check_schema(client: &Client) -> Result<(), PostgresBatchError> {
    for (table, columns) in WRITTEN_COLUMNS {
        let present: HashSet<String> = client
            .query(
                "SELECT column_name::text FROM information_schema.columns \
                 WHERE table_schema = current_schema() AND table_name = $1",
                &[&table],
            )
            .await?
            .iter()
            .map(|row| row.get(0))
            .collect();
        let missing: Vec<&'static str> = columns
            .iter()
            .copied()
            .filter(|column| !present.contains(*column))
            .collect();
        if !missing.is_empty() {
            return Err(PostgresBatchError::Schema { table, missing });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::split_schema;

    #[test]
    fn the_schema_keyword_is_ours_to_strip() {
        let (schema, rest) =
            split_schema("host=127.0.0.1 port=5432 user=postgres dbname=test schema=hashpool_1");
        assert_eq!(schema.as_deref(), Some("hashpool_1"));
        assert_eq!(rest, "host=127.0.0.1 port=5432 user=postgres dbname=test");
        assert_eq!(split_schema("host=db").0, None);
    }
}
