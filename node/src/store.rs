//! The node's durable state: orchestrator and compute records in one fjall database, written
//! in group commits, read by the API through indexes.
//!
//! ## Keyspaces
//!
//! | keyspace | key | value |
//! |---|---|---|
//! | `jobs` | job ID | `JobRecord` (JSON) |
//! | `jobs_created` | create time (u64 BE, offset) + job ID | — (listing order) |
//! | `jobs_live` | job ID | — (non-terminal jobs: what a restart loads) |
//! | `job_names` | namespace `\0` name | job ID |
//! | `executions` | job ID `\0` execution ID | `ExecRecord` |
//! | `exec_index` | execution ID | job ID |
//! | `evaluations` | evaluation ID | `Evaluation` |
//! | `history` | job ID `\0` sequence (u64 BE) | `JobHistory` |
//! | `nodes` | node ID | `NodeRecord` |
//! | `compute` | execution ID / `meta/…` | `ComputeRecord` |
//!
//! Listing pages walk `jobs_created` from a cursor carried in the page token, so a page costs
//! the same whether the store holds ten jobs or a million. A restart loads only `jobs_live`
//! (plus their executions and history): terminal jobs stay on disk and are served from here.
//!
//! ## Durability
//!
//! [`Store::commit`] writes a batch of records atomically and then syncs the journal
//! (`PersistMode::SyncData`) before returning: the caller releases replies and messages only
//! after it returns (write-ahead). One call covers every record of a round — group commit.

use std::path::Path;
use std::sync::Arc;

use base64::Engine as _;
use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};
use gadus_core::compute::ComputeRecord;
use gadus_core::model::{Evaluation, JobHistory, parse_selector};
use gadus_core::orchestrator::{ExecRecord, JobRecord, NodeRecord, Record};

/// A failure of the local disk or database (the node's fault, not the caller's).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// fjall reported an error.
    #[error("database error: {0}")]
    Db(#[from] fjall::Error),
    /// A stored record does not decode (corruption or a format change).
    #[error("corrupt record in {keyspace}: {error}")]
    Corrupt {
        /// Where.
        keyspace: &'static str,
        /// Why.
        error: String,
    },
    /// The background blocking task failed.
    #[error("store task failed: {0}")]
    Task(String),
}

/// The database and its keyspaces.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
    mode: CommitMode,
}

/// How [`Store::commit_async`] makes a batch durable.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CommitMode {
    /// Sync the journal to disk (`SyncData`) on a blocking thread: `gadus serve`.
    #[default]
    Durable,
    /// Hand the journal to the OS and return on the calling task. For the tier-2 simulation:
    /// its crashes are simulated (the process lives on, so the OS keeps what was written), and
    /// a blocking thread would let wall-clock time decide when the commit lands (turmoil#139).
    Simulated,
}

struct Inner {
    db: Database,
    jobs: Keyspace,
    jobs_created: Keyspace,
    jobs_live: Keyspace,
    job_names: Keyspace,
    executions: Keyspace,
    exec_index: Keyspace,
    evaluations: Keyspace,
    history: Keyspace,
    nodes: Keyspace,
    compute: Keyspace,
}

fn created_key(create_time: i64, job_id: &str) -> Vec<u8> {
    // Shift into u64 so big-endian byte order is time order for negative times too.
    let t = (create_time as u64) ^ (1u64 << 63);
    let mut k = t.to_be_bytes().to_vec();
    k.extend_from_slice(job_id.as_bytes());
    k
}

fn pair_key(a: &str, b: &str) -> Vec<u8> {
    let mut k = a.as_bytes().to_vec();
    k.push(0);
    k.extend_from_slice(b.as_bytes());
    k
}

fn seq_key(job_id: &str, seq: u64) -> Vec<u8> {
    let mut k = job_id.as_bytes().to_vec();
    k.push(0);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

fn decode<T: serde::de::DeserializeOwned>(
    keyspace: &'static str,
    bytes: &[u8],
) -> Result<T, StoreError> {
    serde_json::from_slice(bytes)
        .map_err(|e| StoreError::Corrupt { keyspace, error: e.to_string() })
}

fn encode<T: serde::Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).expect("records always encode")
}

/// A page of jobs.
#[derive(Clone, Debug, Default)]
pub struct JobPage {
    /// The jobs (shared with the decoded records: a page is serialized, never edited).
    pub items: Vec<Arc<gadus_core::model::Job>>,
    /// Token for the next page (empty when there is none).
    pub next_token: String,
}

/// What to list.
#[derive(Clone, Debug, Default)]
pub struct JobQuery {
    /// `None` = every namespace.
    pub namespace: Option<String>,
    /// Page size.
    pub limit: usize,
    /// Newest first.
    pub reverse: bool,
    /// Continue after this token.
    pub next_token: Option<String>,
    /// Label selector (query form), all must match.
    pub labels: Vec<String>,
}

impl Store {
    /// Opens (or creates) the database under `dir`.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        Store::open_with(dir, CommitMode::Durable)
    }

    /// Opens (or creates) the database under `dir`, committing as `mode` says.
    pub fn open_with(dir: &Path, mode: CommitMode) -> Result<Store, StoreError> {
        let db = Database::builder(dir).open()?;
        let ks = |name: &str| db.keyspace(name, KeyspaceCreateOptions::default);
        let inner = Inner {
            jobs: ks("jobs")?,
            jobs_created: ks("jobs_created")?,
            jobs_live: ks("jobs_live")?,
            job_names: ks("job_names")?,
            executions: ks("executions")?,
            exec_index: ks("exec_index")?,
            evaluations: ks("evaluations")?,
            history: ks("history")?,
            nodes: ks("nodes")?,
            compute: ks("compute")?,
            db,
        };
        Ok(Store { inner: Arc::new(inner), mode })
    }

    /// Writes every record atomically and syncs to disk before returning.
    pub fn commit(&self, orch: &[Record], compute: &[ComputeRecord]) -> Result<(), StoreError> {
        if orch.is_empty() && compute.is_empty() {
            return Ok(());
        }
        let i = &self.inner;
        let mut b = i.db.batch();
        for r in orch {
            match r {
                Record::Job(j) => {
                    let job = &j.job;
                    b.insert(&i.jobs, job.id.as_bytes(), encode(&**j));
                    b.insert(
                        &i.jobs_created,
                        created_key(job.create_time, &job.id),
                        b"".as_slice(),
                    );
                    b.insert(&i.job_names, pair_key(&job.namespace, &job.name), job.id.as_bytes());
                    if job.is_terminal() {
                        b.remove(&i.jobs_live, job.id.as_bytes());
                    } else {
                        b.insert(&i.jobs_live, job.id.as_bytes(), b"".as_slice());
                    }
                }
                Record::Execution(e) => {
                    let ex = &e.execution;
                    b.insert(&i.executions, pair_key(&ex.job_id, &ex.id), encode(&**e));
                    b.insert(&i.exec_index, ex.id.as_bytes(), ex.job_id.as_bytes());
                }
                Record::Evaluation(e) => b.insert(&i.evaluations, e.id.as_bytes(), encode(&**e)),
                Record::History(h) => {
                    b.insert(&i.history, seq_key(&h.job_id, h.seq_num), encode(&**h))
                }
                Record::Node(n) => b.insert(&i.nodes, n.advert.node_id.as_bytes(), encode(&**n)),
                Record::NodeDeleted(id) => b.remove(&i.nodes, id.as_bytes()),
            }
        }
        for r in compute {
            let (_, key) = r.key();
            match r {
                ComputeRecord::Forget(_) => b.remove(&i.compute, key.as_bytes()),
                other => b.insert(&i.compute, key.as_bytes(), encode(other)),
            }
        }
        b.commit()?;
        i.db.persist(match self.mode {
            CommitMode::Durable => PersistMode::SyncData,
            CommitMode::Simulated => PersistMode::Buffer,
        })?;
        Ok(())
    }

    /// [`Store::commit`] on a blocking thread (in [`CommitMode::Simulated`], on this task).
    pub async fn commit_async(
        &self,
        orch: Vec<Record>,
        compute: Vec<ComputeRecord>,
    ) -> Result<(), StoreError> {
        if self.mode == CommitMode::Simulated {
            return self.commit(&orch, &compute);
        }
        let store = self.clone();
        tokio::task::spawn_blocking(move || store.commit(&orch, &compute))
            .await
            .map_err(|e| StoreError::Task(e.to_string()))?
    }

    /// What an orchestrator restart needs: every node, and the live jobs with their
    /// executions and history (nodes first, then jobs, then the rest).
    pub fn load_orchestrator(&self) -> Result<Vec<Record>, StoreError> {
        let i = &self.inner;
        let mut out = Vec::new();
        for kv in i.nodes.iter() {
            let (_, v) = kv.into_inner()?;
            out.push(Record::Node(Box::new(decode::<NodeRecord>("nodes", &v)?)));
        }
        let mut live = Vec::new();
        for kv in i.jobs_live.iter() {
            let (k, _) = kv.into_inner()?;
            live.push(String::from_utf8_lossy(&k).into_owned());
        }
        for id in &live {
            if let Some(j) = self.job(id)? {
                out.push(Record::Job(Box::new(j)));
            }
        }
        for id in &live {
            for e in self.executions(id)? {
                out.push(Record::Execution(Arc::new(e)));
            }
            for h in self.history(id)? {
                out.push(Record::History(Arc::new(h)));
            }
        }
        Ok(out)
    }

    /// What a compute restart needs.
    pub fn load_compute(&self) -> Result<Vec<ComputeRecord>, StoreError> {
        let mut out = Vec::new();
        for kv in self.inner.compute.iter() {
            let (_, v) = kv.into_inner()?;
            out.push(decode::<ComputeRecord>("compute", &v)?);
        }
        Ok(out)
    }

    /// Whether a job with this exact ID was ever stored (live or terminal).
    pub fn job_exists(&self, id: &str) -> Result<bool, StoreError> {
        Ok(self.inner.jobs.contains_key(id.as_bytes())?)
    }

    /// A job by exact ID.
    pub fn job(&self, id: &str) -> Result<Option<JobRecord>, StoreError> {
        match self.inner.jobs.get(id.as_bytes())? {
            Some(v) => Ok(Some(decode("jobs", &v)?)),
            None => Ok(None),
        }
    }

    /// A job by ID, unique ID prefix, or name in `namespace` (Bacalhau's `GetJobByIDOrName`).
    /// `Err(Ok(n))`-style ambiguity is reported as `Ok(Lookup::Ambiguous)`.
    pub fn find_job(&self, key: &str, namespace: &str) -> Result<Lookup, StoreError> {
        if key.is_empty() {
            return Ok(Lookup::NotFound);
        }
        if let Some(j) = self.job(key)? {
            return Ok(Lookup::Found(Box::new(j)));
        }
        if let Some(id) = self.inner.job_names.get(pair_key(namespace, key))?
            && let Some(j) = self.job(&String::from_utf8_lossy(&id))?
        {
            return Ok(Lookup::Found(Box::new(j)));
        }
        // A short ID: `j-1234` or just `1234…`.
        let prefixes = if key.starts_with("j-") {
            vec![key.to_string()]
        } else {
            vec![format!("j-{key}"), key.to_string()]
        };
        for p in prefixes {
            let mut found = Vec::new();
            for kv in self.inner.jobs.prefix(p.as_bytes()).take(2) {
                let (k, _) = kv.into_inner()?;
                found.push(String::from_utf8_lossy(&k).into_owned());
            }
            match found.len() {
                1 => {
                    if let Some(j) = self.job(&found[0])? {
                        return Ok(Lookup::Found(Box::new(j)));
                    }
                }
                n if n > 1 => return Ok(Lookup::Ambiguous),
                _ => {}
            }
        }
        Ok(Lookup::NotFound)
    }

    /// A job's executions, in attempt order.
    pub fn executions(&self, job_id: &str) -> Result<Vec<ExecRecord>, StoreError> {
        let mut prefix = job_id.as_bytes().to_vec();
        prefix.push(0);
        let mut out: Vec<ExecRecord> = Vec::new();
        for kv in self.inner.executions.prefix(&prefix) {
            let (_, v) = kv.into_inner()?;
            out.push(decode("executions", &v)?);
        }
        out.sort_by_key(|e| e.attempt);
        Ok(out)
    }

    /// The job an execution belongs to.
    pub fn job_of_execution(&self, exec_id: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .inner
            .exec_index
            .get(exec_id.as_bytes())?
            .map(|v| String::from_utf8_lossy(&v).into_owned()))
    }

    /// A job's history, in sequence order.
    pub fn history(&self, job_id: &str) -> Result<Vec<JobHistory>, StoreError> {
        let mut prefix = job_id.as_bytes().to_vec();
        prefix.push(0);
        let mut out = Vec::new();
        for kv in self.inner.history.prefix(&prefix) {
            let (_, v) = kv.into_inner()?;
            out.push(decode("history", &v)?);
        }
        Ok(out)
    }

    /// An evaluation.
    pub fn evaluation(&self, id: &str) -> Result<Option<Evaluation>, StoreError> {
        match self.inner.evaluations.get(id.as_bytes())? {
            Some(v) => Ok(Some(decode("evaluations", &v)?)),
            None => Ok(None),
        }
    }

    /// One page of jobs in creation order (cursor-based: cost depends on the page size).
    pub fn list_jobs(&self, q: &JobQuery) -> Result<JobPage, ListError> {
        let mut selector = Vec::new();
        for l in &q.labels {
            selector.extend(
                parse_selector(l)
                    .map_err(|e| BadQuery(format!("invalid labels selector {l:?}: {e}")))?,
            );
        }
        let cursor = match &q.next_token {
            Some(t) if !t.is_empty() => Some(decode_token(t)?),
            _ => None,
        };
        let i = &self.inner;
        let iter: Box<dyn Iterator<Item = fjall::Guard>> = match (&cursor, q.reverse) {
            (None, false) => Box::new(i.jobs_created.iter()),
            (None, true) => Box::new(i.jobs_created.iter().rev()),
            (Some(c), false) => Box::new(
                i.jobs_created
                    .range((std::ops::Bound::Excluded(c.clone()), std::ops::Bound::Unbounded)),
            ),
            (Some(c), true) => Box::new(
                i.jobs_created
                    .range((std::ops::Bound::Unbounded, std::ops::Bound::Excluded(c.clone())))
                    .rev(),
            ),
        };
        let limit = q.limit.clamp(1, 1000);
        let mut page = JobPage::default();
        let mut last_key = None;
        // Scanning stops after the page is full; filters may skip entries, so bound the scan
        // to keep a selective filter from reading the whole store in one request.
        let scan_max = limit * 50 + 1000;
        for (scanned, kv) in iter.enumerate() {
            let (k, _) = kv.into_inner().map_err(StoreError::from)?;
            if page.items.len() == limit || scanned >= scan_max {
                page.next_token = encode_token(last_key.as_deref().unwrap_or(&k));
                break;
            }
            last_key = Some(k.to_vec());
            // Keys are `creation time (8 bytes) ++ job ID`; anything shorter is not ours.
            let Some(id) = k.get(8..) else { continue };
            let id = String::from_utf8_lossy(id).into_owned();
            let Some(rec) = self.job(&id)? else { continue };
            let job = rec.job;
            if q.namespace.as_ref().is_some_and(|ns| *ns != job.namespace) {
                continue;
            }
            if !selector.iter().all(|r| r.matches(&job.labels)) {
                continue;
            }
            page.items.push(job);
        }
        Ok(page)
    }

    /// Every stored node record.
    pub fn nodes(&self) -> Result<Vec<NodeRecord>, StoreError> {
        let mut out = Vec::new();
        for kv in self.inner.nodes.iter() {
            let (_, v) = kv.into_inner()?;
            out.push(decode("nodes", &v)?);
        }
        Ok(out)
    }

    /// Approximate number of stored jobs.
    pub fn job_count(&self) -> usize {
        self.inner.jobs.approximate_len()
    }
}

/// The outcome of a job lookup by ID, prefix or name.
#[derive(Debug)]
pub enum Lookup {
    /// Exactly one job.
    Found(Box<JobRecord>),
    /// Nothing matches.
    NotFound,
    /// A prefix matches several jobs.
    Ambiguous,
}

/// A malformed list query (the caller's fault).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BadQuery(pub String);

/// Why a page of jobs could not be listed: the query (the client's fault) or the store (the
/// node's).
#[derive(Debug, thiserror::Error)]
pub enum ListError {
    /// The query is malformed.
    #[error(transparent)]
    Query(#[from] BadQuery),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn encode_token(key: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(key)
}

fn decode_token(t: &str) -> Result<Vec<u8>, BadQuery> {
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(t.as_bytes())
        .map_err(|_| BadQuery(format!("invalid next_token {t:?}")))?;
    if bytes.len() < 8 || bytes.len() > 1024 {
        return Err(BadQuery(format!("invalid next_token {t:?}")));
    }
    Ok(bytes)
}
