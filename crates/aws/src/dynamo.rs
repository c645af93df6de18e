//! [`DynamoJobStore`]: one item per job (partition key `id`), the job itself as JSON in
//! `body` plus the attributes the indexes and conditions need:
//!
//! - `owner` + `created_at`: the `by_owner` GSI, an owner's jobs newest first;
//! - `active_pk` (present only while active) + `created_at`: the sparse `active` GSI the
//!   reaper queries instead of scanning (docs/design-notes.md 4);
//! - `state` + `revision`: the condition of every replace;
//! - `expires_at` (epoch seconds, set on a terminal state): the TTL attribute; reads filter
//!   on it because TTL deletes "within a few days" (docs/design-notes.md 7).
//!
//! The active-job limit is an atomic counter item (`id = "#active"`), incremented in the
//! same transaction as a create and decremented in the same transaction as a terminal
//! replace, so the count is exact and capacity is released on every terminal transition.

use std::{collections::HashMap, time::Duration};

use aws_sdk_dynamodb::{
    Client,
    error::SdkError,
    operation::transact_write_items::TransactWriteItemsError,
    types::{
        AttributeDefinition, AttributeValue, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType, Projection,
        ProjectionType, Put, ScalarAttributeType, TimeToLiveSpecification, TransactWriteItem, Update,
    },
};
use barge_jobs::{Created, Job, JobId, JobStore, Page, State, StoreError, Timestamp};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};

/// The counter item's key; never a valid job id.
const COUNTER_ID: &str = "#active";
/// The one partition of the sparse `active` index.
const ACTIVE: &str = "active";
/// Attempts at a transaction that DynamoDB cancelled for a concurrent one.
const TRANSACTION_ATTEMPTS: u32 = 60;

/// The table's names, shared with the CDK app (infra/) that creates it in AWS.
#[derive(Clone, Copy, Debug)]
pub struct TableNames;

impl TableNames {
    /// Index of an owner's jobs by creation time.
    pub const BY_OWNER: &'static str = "by_owner";
    /// Sparse index of active jobs by creation time.
    pub const ACTIVE: &'static str = "active";
    /// The TTL attribute.
    pub const TTL: &'static str = "expires_at";
}

/// Jobs in a DynamoDB table.
#[derive(Clone)]
pub struct DynamoJobStore {
    client: Client,
    table: String,
}

fn unavailable<E: std::fmt::Debug>(what: &str) -> impl FnOnce(E) -> StoreError + '_ {
    move |e| StoreError::Unavailable(format!("DynamoDB {what}: {e:?}"))
}

fn s(value: impl Into<String>) -> AttributeValue {
    AttributeValue::S(value.into())
}

fn n(value: impl ToString) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

fn item(job: &Job) -> Result<HashMap<String, AttributeValue>, StoreError> {
    let body = serde_json::to_string(job)
        .map_err(|e| StoreError::Corrupt { id: job.id.to_string(), message: e.to_string() })?;
    let mut item = HashMap::from([
        ("id".to_string(), s(job.id.as_str())),
        ("owner".to_string(), s(&job.owner)),
        ("created_at".to_string(), n(job.created_at.millis())),
        ("state".to_string(), s(job.state().as_str())),
        ("revision".to_string(), n(job.revision)),
        ("body".to_string(), s(body)),
    ]);
    if job.is_active() {
        item.insert("active_pk".into(), s(ACTIVE));
    }
    if let Some(expires_at) = job.expires_at {
        item.insert(TableNames::TTL.into(), n(expires_at.seconds()));
    }
    Ok(item)
}

fn job_of(item: &HashMap<String, AttributeValue>) -> Result<Job, StoreError> {
    let id = item.get("id").and_then(|v| v.as_s().ok()).cloned().unwrap_or_default();
    let body = item
        .get("body")
        .and_then(|v| v.as_s().ok())
        .ok_or_else(|| StoreError::Corrupt { id: id.clone(), message: "no body".into() })?;
    serde_json::from_str(body).map_err(|e| StoreError::Corrupt { id, message: e.to_string() })
}

fn cancellation_codes(e: &SdkError<TransactWriteItemsError>) -> Option<Vec<String>> {
    match e.as_service_error() {
        Some(TransactWriteItemsError::TransactionCanceledException(cancelled)) => Some(
            cancelled.cancellation_reasons().iter().map(|reason| reason.code().unwrap_or("None").to_string()).collect(),
        ),
        _ => None,
    }
}

/// A short, jittered pause before retrying a transaction that lost to a concurrent one.
async fn back_off(attempt: u32) {
    let mut jitter = [0u8; 1];
    // Without randomness the pause is just not jittered.
    let _ = getrandom::fill(&mut jitter);
    let millis = u64::from(attempt.min(8)) * 5 + u64::from(jitter[0] % 20);
    tokio::time::sleep(Duration::from_millis(millis)).await;
}

/// The condition of a job write: no such item (create), or the revision and state it was
/// computed from (replace).
struct Condition {
    expression: &'static str,
    names: HashMap<String, String>,
    values: HashMap<String, AttributeValue>,
}

fn condition(current: Option<&Job>) -> Condition {
    match current {
        None => Condition { expression: "attribute_not_exists(id)", names: HashMap::new(), values: HashMap::new() },
        Some(current) => Condition {
            expression: "#revision = :revision AND #state = :state",
            names: HashMap::from([("#revision".into(), "revision".into()), ("#state".into(), "state".into())]),
            values: HashMap::from([
                (":revision".into(), n(current.revision)),
                (":state".into(), s(current.state().as_str())),
            ]),
        },
    }
}

fn cursor(job: &Job) -> String {
    URL_SAFE_NO_PAD.encode(format!("{}.{}", job.created_at.millis(), job.id))
}

fn parse_cursor(text: &str) -> Result<(i64, JobId), StoreError> {
    let bytes = URL_SAFE_NO_PAD.decode(text).map_err(|_| StoreError::BadCursor)?;
    let text = String::from_utf8(bytes).map_err(|_| StoreError::BadCursor)?;
    let (millis, id) = text.split_once('.').ok_or(StoreError::BadCursor)?;
    Ok((millis.parse().map_err(|_| StoreError::BadCursor)?, JobId::parse(id).ok_or(StoreError::BadCursor)?))
}

impl DynamoJobStore {
    /// A store on `table`.
    pub fn new(config: &aws_config::SdkConfig, table: impl Into<String>) -> Self {
        DynamoJobStore { client: Client::new(config), table: table.into() }
    }

    /// Creates the table as the CDK app does (on-demand, both GSIs, TTL), for tests and
    /// local development.
    pub async fn create_table(&self) -> Result<(), StoreError> {
        let key = |name: &str, kind: KeyType| {
            KeySchemaElement::builder().attribute_name(name).key_type(kind).build().map_err(unavailable("schema"))
        };
        let attribute = |name: &str, kind: ScalarAttributeType| {
            AttributeDefinition::builder()
                .attribute_name(name)
                .attribute_type(kind)
                .build()
                .map_err(unavailable("schema"))
        };
        let index = |name: &str, partition: &str| -> Result<GlobalSecondaryIndex, StoreError> {
            GlobalSecondaryIndex::builder()
                .index_name(name)
                .key_schema(key(partition, KeyType::Hash)?)
                .key_schema(key("created_at", KeyType::Range)?)
                .projection(Projection::builder().projection_type(ProjectionType::All).build())
                .build()
                .map_err(unavailable("schema"))
        };
        self.client
            .create_table()
            .table_name(&self.table)
            .billing_mode(BillingMode::PayPerRequest)
            .key_schema(key("id", KeyType::Hash)?)
            .attribute_definitions(attribute("id", ScalarAttributeType::S)?)
            .attribute_definitions(attribute("owner", ScalarAttributeType::S)?)
            .attribute_definitions(attribute("active_pk", ScalarAttributeType::S)?)
            .attribute_definitions(attribute("created_at", ScalarAttributeType::N)?)
            .global_secondary_indexes(index(TableNames::BY_OWNER, "owner")?)
            .global_secondary_indexes(index(TableNames::ACTIVE, "active_pk")?)
            .send()
            .await
            .map_err(unavailable("CreateTable"))?;
        self.client
            .update_time_to_live()
            .table_name(&self.table)
            .time_to_live_specification(
                TimeToLiveSpecification::builder()
                    .enabled(true)
                    .attribute_name(TableNames::TTL)
                    .build()
                    .map_err(unavailable("schema"))?,
            )
            .send()
            .await
            .map_err(unavailable("UpdateTimeToLive"))?;
        Ok(())
    }

    /// Every item of the table, raw (for secret-grepping tests).
    pub async fn dump(&self) -> Result<Vec<String>, StoreError> {
        let mut items = Vec::new();
        let mut start = None;
        loop {
            let page = self
                .client
                .scan()
                .table_name(&self.table)
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(unavailable("Scan"))?;
            items.extend(page.items().iter().map(|item| format!("{item:?}")));
            start = page.last_evaluated_key;
            if start.is_none() {
                return Ok(items);
            }
        }
    }

    async fn get_item(&self, id: &str) -> Result<Option<HashMap<String, AttributeValue>>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("id", s(id))
            .consistent_read(true)
            .send()
            .await
            .map_err(unavailable("GetItem"))?;
        Ok(out.item)
    }

    fn put_job(&self, next: &Job, current: Option<&Job>) -> Result<Put, StoreError> {
        let condition = condition(current);
        Put::builder()
            .table_name(&self.table)
            .set_item(Some(item(next)?))
            .condition_expression(condition.expression)
            .set_expression_attribute_names((!condition.names.is_empty()).then_some(condition.names))
            .set_expression_attribute_values((!condition.values.is_empty()).then_some(condition.values))
            .build()
            .map_err(unavailable("Put"))
    }

    fn count_update(&self, delta: i64, limit: Option<u32>) -> Result<Update, StoreError> {
        let mut update = Update::builder()
            .table_name(&self.table)
            .key("id", s(COUNTER_ID))
            .update_expression("SET #n = if_not_exists(#n, :zero) + :delta")
            .expression_attribute_names("#n", "n")
            .expression_attribute_values(":zero", n(0))
            .expression_attribute_values(":delta", n(delta));
        if let Some(limit) = limit {
            update = update
                .condition_expression("attribute_not_exists(#n) OR #n < :limit")
                .expression_attribute_values(":limit", n(limit));
        }
        update.build().map_err(unavailable("Update"))
    }

    /// Runs a two-item transaction (the job, the counter), retrying while DynamoDB cancels
    /// it for a concurrent transaction on the counter. Returns which items' conditions
    /// failed.
    async fn transact(&self, put: Put, update: Update) -> Result<[bool; 2], StoreError> {
        for attempt in 0..TRANSACTION_ATTEMPTS {
            let result = self
                .client
                .transact_write_items()
                .transact_items(TransactWriteItem::builder().put(put.clone()).build())
                .transact_items(TransactWriteItem::builder().update(update.clone()).build())
                .send()
                .await;
            let e = match result {
                Ok(_) => return Ok([false, false]),
                Err(e) => e,
            };
            let Some(codes) = cancellation_codes(&e) else {
                return Err(StoreError::Unavailable(format!("DynamoDB TransactWriteItems: {e:?}")));
            };
            let failed = |i: usize| codes.get(i).is_some_and(|code| code == "ConditionalCheckFailed");
            if failed(0) || failed(1) {
                return Ok([failed(0), failed(1)]);
            }
            if !codes.iter().any(|code| code == "TransactionConflict") {
                return Err(StoreError::Unavailable(format!("DynamoDB transaction cancelled: {codes:?}")));
            }
            back_off(attempt).await;
        }
        Err(StoreError::Unavailable("DynamoDB: the active-job counter stayed contended".into()))
    }

    async fn query_all(
        &self,
        index: &str,
        partition: (&str, AttributeValue),
        forward: bool,
    ) -> Result<Vec<Job>, StoreError> {
        let now = Timestamp::now();
        let mut jobs = Vec::new();
        let mut start = None;
        loop {
            let page = self
                .client
                .query()
                .table_name(&self.table)
                .index_name(index)
                .key_condition_expression("#p = :p")
                .expression_attribute_names("#p", partition.0)
                .expression_attribute_values(":p", partition.1.clone())
                .scan_index_forward(forward)
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(unavailable("Query"))?;
            for item in page.items() {
                let job = job_of(item)?;
                if !job.is_expired(now) {
                    jobs.push(job);
                }
            }
            start = page.last_evaluated_key;
            if start.is_none() {
                return Ok(jobs);
            }
        }
    }
}

impl JobStore for DynamoJobStore {
    async fn create(&self, job: &Job, max_active: u32) -> Result<Created, StoreError> {
        let put = self.put_job(job, None)?;
        let update = self.count_update(1, Some(max_active))?;
        match self.transact(put, update).await? {
            [false, false] => Ok(Created::New(job.clone())),
            [true, _] => {
                let item = self.get_item(job.id.as_str()).await?.ok_or(StoreError::Conflict)?;
                let existing = job_of(&item)?;
                if existing.is_expired(Timestamp::now()) {
                    return Err(StoreError::KeyExpired);
                }
                Ok(Created::Existing(existing))
            }
            [false, true] => Err(StoreError::LimitReached { limit: max_active }),
        }
    }

    async fn get(&self, id: &JobId) -> Result<Option<Job>, StoreError> {
        let Some(item) = self.get_item(id.as_str()).await? else {
            return Ok(None);
        };
        let job = job_of(&item)?;
        Ok((!job.is_expired(Timestamp::now())).then_some(job))
    }

    async fn replace(&self, current: &Job, next: &Job) -> Result<(), StoreError> {
        if current.is_active() && !next.is_active() {
            let put = self.put_job(next, Some(current))?;
            return match self.transact(put, self.count_update(-1, None)?).await? {
                [false, false] => Ok(()),
                _ => Err(StoreError::Conflict),
            };
        }
        let condition = condition(Some(current));
        let request = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item(next)?))
            .condition_expression(condition.expression)
            .set_expression_attribute_names(Some(condition.names))
            .set_expression_attribute_values(Some(condition.values));
        match request.send().await {
            Ok(_) => Ok(()),
            Err(e) if e.as_service_error().is_some_and(|e| e.is_conditional_check_failed_exception()) => {
                Err(StoreError::Conflict)
            }
            Err(e) => Err(StoreError::Unavailable(format!("DynamoDB PutItem: {e:?}"))),
        }
    }

    async fn list(
        &self,
        owner: &str,
        state: Option<State>,
        limit: u32,
        after: Option<&str>,
    ) -> Result<Page, StoreError> {
        let mut start = match after {
            Some(text) => {
                let (millis, id) = parse_cursor(text)?;
                Some(HashMap::from([
                    ("id".to_string(), s(id.as_str())),
                    ("owner".to_string(), s(owner)),
                    ("created_at".to_string(), n(millis)),
                ]))
            }
            None => None,
        };
        let now = Timestamp::now();
        let mut jobs = Vec::new();
        loop {
            let mut query = self
                .client
                .query()
                .table_name(&self.table)
                .index_name(TableNames::BY_OWNER)
                .key_condition_expression("#owner = :owner")
                .filter_expression("(attribute_not_exists(#ttl) OR #ttl > :now)")
                .expression_attribute_names("#owner", "owner")
                .expression_attribute_names("#ttl", TableNames::TTL)
                .expression_attribute_values(":owner", s(owner))
                .expression_attribute_values(":now", n(now.seconds()))
                .scan_index_forward(false)
                .limit(i32::try_from(limit + 1).unwrap_or(i32::MAX))
                .set_exclusive_start_key(start);
            if let Some(state) = state {
                query = query
                    .filter_expression("(attribute_not_exists(#ttl) OR #ttl > :now) AND #state = :state")
                    .expression_attribute_names("#state", "state")
                    .expression_attribute_values(":state", s(state.as_str()));
            }
            let page = query.send().await.map_err(unavailable("Query"))?;
            for item in page.items() {
                let job = job_of(item)?;
                if !job.is_expired(now) {
                    jobs.push(job);
                }
            }
            start = page.last_evaluated_key;
            if jobs.len() > limit as usize || start.is_none() {
                break;
            }
        }
        Ok(Page::cut(jobs, limit, cursor))
    }

    async fn active(&self) -> Result<Vec<Job>, StoreError> {
        let jobs = self.query_all(TableNames::ACTIVE, ("active_pk", s(ACTIVE)), true).await?;
        Ok(jobs.into_iter().filter(Job::is_active).collect())
    }

    async fn active_count(&self) -> Result<u32, StoreError> {
        let count = self
            .get_item(COUNTER_ID)
            .await?
            .and_then(|item| item.get("n").and_then(|v| v.as_n().ok()).and_then(|n| n.parse::<i64>().ok()))
            .unwrap_or(0);
        Ok(u32::try_from(count.max(0)).unwrap_or(u32::MAX))
    }
}
