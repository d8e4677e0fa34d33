//! `hookv-cli [--addr A] [--token T] [--tls [--ca FILE] [--cert FILE --key FILE]
//! [--server-name NAME]] <command> ...`: the stock client.
//!
//! Exit status 0 on 200, 1 on any other status, 2 on bad usage, 3 when the
//! server cannot be reached or answers garbage.
//!
//! Two forms of output, as redis-cli has:
//!
//! - **typed** (the default at a terminal, or `--no-raw`): every value says
//!   its type, so the string `"42"` and `(integer) 42` differ, as do the
//!   string `"0xdeadbeef"` and `(binary) 0xdeadbeef`; strings are quoted
//!   and escaped, a missing value is `(nil)`, an empty table `(empty table)`.
//! - **raw** (the default when stdout is not a terminal, or `--raw`): the
//!   plain text scripts read: values as they are (binary as `0x` hex), a
//!   missing value `(nil)`, nothing at all for an empty table.
//!
//! `hscan` prints one page and, on stderr, the cursor of the next. An
//! `hgetall` whose answer is too large for one frame (413) is read again in
//! `hscan` pages and printed as they come (said on stderr): the same pairs
//! in the same order, though not a snapshot of one moment.
//!
//! `stats` prints the server's figures grouped like Redis `INFO`, in human
//! units when typed (`# Server`, `uptime_seconds: 1h 02m 03s`, one line per
//! command), as `section.name=value` lines when raw.
//!
//! `hset ... --file PATH` (`-`: stdin) reads the value from a file, so binary
//! values need not go through the command line as hex (where the kernel caps
//! one argument at 128 KiB, 64 KiB of bytes).

use std::io::{IsTerminal, Read};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use hookv::client::{Client, ClientError};
use hookv::command::HSCAN_MAX_COUNT;
use hookv::config::MAX_FRAME_BYTES_LIMIT;
use hookv::pb::command_request::RequestData;
use hookv::pb::{status, value, CommandRequest, CommandResponse, Kvpair, Value};
use hookv::tls::{ClientCertFiles, ClientTls, TlsOptions};

#[derive(Debug, Parser)]
#[command(version, about = "The stock hookv client")]
struct Args {
    /// Server address.
    #[arg(
        long,
        env = "HOOKV_ADDR",
        default_value = "127.0.0.1:9527",
        global = true
    )]
    addr: String,
    /// Authenticate with this token before the command.
    #[arg(long, env = "HOOKV_TOKEN", global = true, hide_env_values = true)]
    token: Option<String>,
    /// Connect with TLS.
    #[arg(long, global = true)]
    tls: bool,
    /// CA certificates (PEM) to trust for the server's certificate; default:
    /// the system's trust store.
    #[arg(long, value_name = "FILE", global = true, requires = "tls")]
    ca: Option<PathBuf>,
    /// A client certificate (PEM) to present; needs --key.
    #[arg(long = "cert", id = "tls_cert", value_name = "FILE", global = true, requires_all = ["tls", "tls_key"])]
    cert: Option<PathBuf>,
    /// The private key (PEM) of --cert.
    #[arg(long = "key", id = "tls_key", value_name = "FILE", global = true, requires_all = ["tls", "tls_cert"])]
    key: Option<PathBuf>,
    /// The name the server's certificate must carry; default: the host of --addr.
    #[arg(long, value_name = "NAME", global = true, requires = "tls")]
    server_name: Option<String>,
    /// Plain output for scripts (the default when stdout is not a terminal):
    /// values as they are, binary as 0x hex, nothing for an empty table.
    #[arg(long, global = true, conflicts_with = "no_raw")]
    raw: bool,
    /// Typed output (the default at a terminal): "string", (integer) 42,
    /// (float) 1.5, (bool) true, (binary) 0x00ff, (nil), (empty table).
    #[arg(long, global = true)]
    no_raw: bool,
    #[command(subcommand)]
    command: Command,
}

/// How to read VALUE arguments.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum Type {
    String,
    #[value(alias = "int")]
    Integer,
    Float,
    Bool,
    /// Hex digits, optionally prefixed by 0x.
    Binary,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Get one key.
    Hget { table: String, key: String },
    /// Get every pair of a table, sorted by key (in hscan pages if it is too
    /// large for one answer).
    Hgetall { table: String },
    /// Get one page of a table, sorted by key; the next page's cursor goes to stderr.
    Hscan {
        table: String,
        /// At most this many pairs (0: the server's default, 100; at most 10000).
        #[arg(long, default_value_t = 0)]
        count: u32,
        /// Start after this key (the cursor a previous page printed); none: from the start.
        #[arg(long)]
        cursor: Option<String>,
    },
    /// Get several keys.
    Hmget {
        table: String,
        #[arg(required = true)]
        keys: Vec<String>,
    },
    /// Set a key; prints the previous value.
    Hset {
        table: String,
        key: String,
        /// The value (or --file).
        #[arg(required_unless_present = "file")]
        value: Option<String>,
        /// Type of VALUE.
        #[arg(short, long, value_enum, default_value = "string")]
        r#type: Type,
        /// Read the value from PATH ("-": stdin) instead: with -t binary its
        /// bytes as they are (not hex), else its text (numbers and bools
        /// trimmed of surrounding whitespace).
        #[arg(long, value_name = "PATH", conflicts_with = "value")]
        file: Option<PathBuf>,
    },
    /// Set several keys: KEY VALUE [KEY VALUE ...]; prints the previous values.
    Hmset {
        table: String,
        #[arg(required = true, num_args = 2.., value_names = ["KEY", "VALUE"])]
        pairs: Vec<String>,
        /// Type of every VALUE.
        #[arg(short, long, value_enum, default_value = "string")]
        r#type: Type,
    },
    /// Delete a key; prints the removed value.
    Hdel { table: String, key: String },
    /// Delete several keys; prints the removed values.
    Hmdel {
        table: String,
        #[arg(required = true)]
        keys: Vec<String>,
    },
    /// Does a key exist?
    Hexist { table: String, key: String },
    /// Do these keys exist?
    Hmexist {
        table: String,
        #[arg(required = true)]
        keys: Vec<String>,
    },
    /// The server's figures (what /metrics exports), grouped like Redis INFO.
    Stats,
    /// Print the SHA-256 of TOKEN for an auth hook's `token_sha256` (no server needed).
    HashToken { token: String },
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Command::HashToken { token } = &args.command {
        println!("{}", hookv::hooks::auth::hash_token(token));
        return ExitCode::SUCCESS;
    }
    let (request, keys) = match build(&args.command) {
        Ok(built) => built,
        Err(e) => {
            eprintln!("hookv-cli: {e}");
            return ExitCode::from(2);
        }
    };
    let tls = match tls_options(&args).map(|o| o.load()).transpose() {
        Ok(tls) => tls,
        Err(e) => {
            eprintln!("hookv-cli: {e}");
            return ExitCode::from(2);
        }
    };
    let form = if args.raw {
        Form::Raw
    } else if args.no_raw || std::io::stdout().is_terminal() {
        Form::Typed
    } else {
        Form::Raw
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("hookv-cli: cannot start runtime: {e}");
            return ExitCode::from(3);
        }
    };
    match runtime.block_on(call(&args, tls.as_ref(), &request, form)) {
        Ok(Answer { res, printed }) if res.is_ok() => {
            if let Command::Stats = &args.command {
                print_stats(&res, form);
            } else if !printed {
                print(&res, keys.as_deref(), form, listing(&args.command));
            }
            if let Command::Hscan { .. } = &args.command {
                match &res.cursor {
                    Some(next) => eprintln!("next page: --cursor {next:?}"),
                    None => eprintln!("end of table"),
                }
            }
            ExitCode::SUCCESS
        }
        Ok(Answer { res, .. }) => {
            eprintln!("error {}: {}", res.status, res.message);
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("hookv-cli: {}: {e}", args.addr);
            ExitCode::from(3)
        }
    }
}

/// `--tls` and its options, if given.
fn tls_options(args: &Args) -> Option<TlsOptions> {
    args.tls.then(|| TlsOptions {
        ca: args.ca.clone(),
        client_cert: args
            .cert
            .clone()
            .zip(args.key.clone())
            .map(|(cert, key)| ClientCertFiles { cert, key }),
        server_name: args.server_name.clone(),
    })
}

/// The server's answer, and whether its pairs were printed already (page by
/// page, for an `hgetall` too large for one answer).
struct Answer {
    res: CommandResponse,
    printed: bool,
}

async fn call(
    args: &Args,
    tls: Option<&ClientTls>,
    request: &CommandRequest,
    form: Form,
) -> Result<Answer, ClientError> {
    let answer = |res| Answer {
        res,
        printed: false,
    };
    let mut client = match tls {
        Some(tls) => Client::connect_tls(&args.addr, tls).await?,
        None => Client::connect(args.addr.as_str()).await?,
    };
    if let Some(token) = &args.token {
        let res = client.auth(token).await?;
        if !res.is_ok() {
            return Ok(answer(res));
        }
    }
    let res = client.send(request).await?;
    match &request.request_data {
        Some(RequestData::Hgetall(r)) if res.status == status::TOO_LARGE => {
            let res = hgetall_in_pages(&mut client, &r.table, form).await?;
            Ok(Answer { res, printed: true })
        }
        _ => Ok(answer(res)),
    }
}

/// Reads and prints `table` page by page, for an `hgetall` whose answer does
/// not fit in a frame. Answers the first refusal, or an empty 200 at the end.
async fn hgetall_in_pages(
    client: &mut Client,
    table: &str,
    form: Form,
) -> Result<CommandResponse, ClientError> {
    eprintln!("hgetall: the table does not fit in one answer; reading it in hscan pages");
    // The server cuts pages to fit its frames; ask for as much as it allows.
    let mut cursor = None;
    loop {
        let page = client
            .hscan(table, cursor.as_deref(), HSCAN_MAX_COUNT)
            .await?;
        if !page.is_ok() {
            return Ok(page);
        }
        print(&page, None, form, None);
        match page.cursor {
            Some(next) => cursor = Some(next),
            None => return Ok(CommandResponse::ok()),
        }
    }
}

/// The request, and the keys to label multi-key answers with.
fn build(command: &Command) -> Result<(CommandRequest, Option<Vec<String>>), String> {
    Ok(match command {
        Command::Hget { table, key } => (CommandRequest::new_hget(table, key), None),
        Command::Hgetall { table } => (CommandRequest::new_hgetall(table), None),
        Command::Hscan {
            table,
            count,
            cursor,
        } => (
            CommandRequest::new_hscan(table, cursor.clone(), *count),
            None,
        ),
        Command::Hmget { table, keys } => (
            CommandRequest::new_hmget(table, keys.clone()),
            Some(keys.clone()),
        ),
        Command::Hset {
            table,
            key,
            value,
            r#type,
            file,
        } => {
            let value = match (value, file) {
                (Some(text), _) => parse_value(text, *r#type)?,
                (None, Some(path)) => value_from_file(path, *r#type)?,
                // clap requires one of them.
                (None, None) => return Err("hset: give VALUE or --file PATH".into()),
            };
            (CommandRequest::new_hset(table, key, value), None)
        }
        Command::Hmset {
            table,
            pairs,
            r#type,
        } => {
            if !pairs.len().is_multiple_of(2) {
                return Err(format!(
                    "hmset: {} is a key with no value",
                    pairs[pairs.len() - 1]
                ));
            }
            let pairs = pairs
                .chunks(2)
                .map(|kv| Ok(Kvpair::new(kv[0].clone(), parse_value(&kv[1], *r#type)?)))
                .collect::<Result<Vec<_>, String>>()?;
            let keys = pairs.iter().map(|p| p.key.clone()).collect();
            (CommandRequest::new_hmset(table, pairs), Some(keys))
        }
        Command::Hdel { table, key } => (CommandRequest::new_hdel(table, key), None),
        Command::Hmdel { table, keys } => (
            CommandRequest::new_hmdel(table, keys.clone()),
            Some(keys.clone()),
        ),
        Command::Hexist { table, key } => (CommandRequest::new_hexist(table, key), None),
        Command::Hmexist { table, keys } => (
            CommandRequest::new_hmexist(table, keys.clone()),
            Some(keys.clone()),
        ),
        Command::Stats => (CommandRequest::new_stats(), None),
        Command::HashToken { .. } => return Err("hash-token needs no server".into()),
    })
}

fn parse_value(text: &str, ty: Type) -> Result<Value, String> {
    let bad = |what: &str| format!("{text:?} is not {what}");
    Ok(match ty {
        Type::String => text.into(),
        Type::Integer => text.parse::<i64>().map_err(|_| bad("an integer"))?.into(),
        Type::Float => text.parse::<f64>().map_err(|_| bad("a float"))?.into(),
        Type::Bool => text
            .parse::<bool>()
            .map_err(|_| bad("true or false"))?
            .into(),
        Type::Binary => {
            let hex = text.strip_prefix("0x").unwrap_or(text);
            if !hex.len().is_multiple_of(2) || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(bad("hex bytes"));
            }
            let bytes = (0..hex.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).map_err(|_| bad("hex bytes")))
                .collect::<Result<Vec<u8>, String>>()?;
            bytes.into()
        }
    })
}

/// Reads the value of `hset --file PATH` (`-`: stdin), at most the largest
/// frame any server accepts.
fn value_from_file(path: &Path, ty: Type) -> Result<Value, String> {
    let name = path.display();
    let limit = MAX_FRAME_BYTES_LIMIT as u64;
    let mut bytes = Vec::new();
    let read = if path == Path::new("-") {
        std::io::stdin()
            .lock()
            .take(limit + 1)
            .read_to_end(&mut bytes)
    } else {
        std::fs::File::open(path).and_then(|f| f.take(limit + 1).read_to_end(&mut bytes))
    };
    read.map_err(|e| format!("--file {name}: {e}"))?;
    if bytes.len() as u64 > limit {
        return Err(format!(
            "--file {name}: larger than any frame a server accepts ({limit} bytes)"
        ));
    }
    if let Type::Binary = ty {
        return Ok(bytes.into());
    }
    let text = String::from_utf8(bytes)
        .map_err(|_| format!("--file {name}: not UTF-8 text; -t binary stores its bytes"))?;
    match ty {
        Type::String => Ok(text.into()),
        _ => parse_value(text.trim(), ty).map_err(|e| format!("--file {name}: {e}")),
    }
}

/// How answers are printed: see the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Form {
    Typed,
    Raw,
}

/// What an empty list of pairs is called in the typed form, for the
/// commands that answer pairs.
fn listing(command: &Command) -> Option<&'static str> {
    match command {
        Command::Hgetall { .. } => Some("(empty table)"),
        Command::Hscan { .. } => Some("(empty page)"),
        _ => None,
    }
}

/// A `stats` answer: for a person (typed), or `section.name=value` lines.
fn print_stats(res: &CommandResponse, form: Form) {
    match form {
        Form::Typed => print!("{}", hookv::metrics::stats_for_a_person(&res.pairs)),
        Form::Raw => {
            let mut out = String::new();
            for pair in &res.pairs {
                let value = pair.value.clone().unwrap_or_default();
                out.push_str(&format!("{}={value}\n", pair.key));
            }
            print!("{out}");
        }
    }
}

/// One value in `form`.
fn show(value: &Value, form: Form) -> String {
    if form == Form::Raw {
        return value.to_string();
    }
    match &value.value {
        None => "(nil)".to_owned(),
        Some(value::Value::String(s)) => format!("{s:?}"),
        Some(value::Value::Integer(i)) => format!("(integer) {i}"),
        Some(value::Value::Float(x)) => format!("(float) {x:?}"),
        Some(value::Value::Bool(b)) => format!("(bool) {b}"),
        // Hex, as `-t binary` takes it: what is printed can be set again.
        Some(value::Value::Binary(_)) => format!("(binary) {value}"),
    }
}

/// A key in `form`: quoted when typed, so `""` and spaces show.
fn show_key(key: &str, form: Form) -> String {
    match form {
        Form::Typed => format!("{key:?}"),
        Form::Raw => key.to_owned(),
    }
}

/// Prints an answer: its pairs (`key = value`), its values (labelled with
/// `keys` for multi-key commands), and its message on stderr. `empty`
/// names an answer without pairs in the typed form (hgetall, hscan).
fn print(res: &CommandResponse, keys: Option<&[String]>, form: Form, empty: Option<&str>) {
    let mut out = String::new();
    for pair in &res.pairs {
        let value = pair.value.clone().unwrap_or_default();
        out.push_str(&format!(
            "{} = {}\n",
            show_key(&pair.key, form),
            show(&value, form)
        ));
    }
    match (empty, form) {
        (Some(empty), Form::Typed) if res.pairs.is_empty() => {
            out.push_str(empty);
            out.push('\n');
        }
        _ => {}
    }
    match keys {
        Some(keys) => {
            for (key, value) in keys.iter().zip(&res.values) {
                out.push_str(&format!(
                    "{} = {}\n",
                    show_key(key, form),
                    show(value, form)
                ));
            }
        }
        None => {
            for value in &res.values {
                out.push_str(&show(value, form));
                out.push('\n');
            }
        }
    }
    print!("{out}");
    if !res.message.is_empty() {
        eprintln!("{}", res.message);
    }
}
