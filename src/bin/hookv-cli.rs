//! `hookv-cli [--addr A] [--token T] [--tls [--ca FILE] [--cert FILE --key FILE]
//! [--server-name NAME]] <command> ...`: the stock client.
//!
//! Prints the answer readably; exit status 0 on 200, 1 on any other status,
//! 2 on bad usage, 3 when the server cannot be reached or answers garbage.
//!
//! `hscan` prints one page and, on stderr, the cursor of the next. An
//! `hgetall` whose answer is too large for one frame (413) is read again in
//! `hscan` pages and printed as they come (said on stderr): the same pairs
//! in the same order, though not a snapshot of one moment.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use hookv::client::{Client, ClientError};
use hookv::command::HSCAN_MAX_COUNT;
use hookv::pb::command_request::RequestData;
use hookv::pb::{status, CommandRequest, CommandResponse, Kvpair, Value};
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
        value: String,
        /// Type of VALUE.
        #[arg(short, long, value_enum, default_value = "string")]
        r#type: Type,
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
    match runtime.block_on(call(&args, tls.as_ref(), &request)) {
        Ok(res) if res.is_ok() => {
            print(&res, keys.as_deref());
            if let Command::Hscan { .. } = &args.command {
                match &res.cursor {
                    Some(next) => eprintln!("next page: --cursor {next:?}"),
                    None => eprintln!("end of table"),
                }
            }
            ExitCode::SUCCESS
        }
        Ok(res) => {
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

async fn call(
    args: &Args,
    tls: Option<&ClientTls>,
    request: &CommandRequest,
) -> Result<CommandResponse, ClientError> {
    let mut client = match tls {
        Some(tls) => Client::connect_tls(&args.addr, tls).await?,
        None => Client::connect(args.addr.as_str()).await?,
    };
    if let Some(token) = &args.token {
        let res = client.auth(token).await?;
        if !res.is_ok() {
            return Ok(res);
        }
    }
    let res = client.send(request).await?;
    match &request.request_data {
        Some(RequestData::Hgetall(r)) if res.status == status::TOO_LARGE => {
            hgetall_in_pages(&mut client, &r.table).await
        }
        _ => Ok(res),
    }
}

/// Reads and prints `table` page by page, for an `hgetall` whose answer does
/// not fit in a frame. Answers the first refusal, or an empty 200 at the end.
async fn hgetall_in_pages(
    client: &mut Client,
    table: &str,
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
        print(&page, None);
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
        } => (
            CommandRequest::new_hset(table, key, parse_value(value, *r#type)?),
            None,
        ),
        Command::Hmset {
            table,
            pairs,
            r#type,
        } => {
            if pairs.len() % 2 != 0 {
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
            if hex.len() % 2 != 0 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
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

fn print(res: &CommandResponse, keys: Option<&[String]>) {
    for pair in &res.pairs {
        println!("{} = {}", pair.key, pair.value.clone().unwrap_or_default());
    }
    match keys {
        Some(keys) => {
            for (key, value) in keys.iter().zip(&res.values) {
                println!("{key} = {value}");
            }
        }
        None => {
            for value in &res.values {
                println!("{value}");
            }
        }
    }
    if !res.message.is_empty() {
        eprintln!("{}", res.message);
    }
}
