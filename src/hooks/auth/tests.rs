//! The auth hook's tests: options, tokens, certificates, patterns, failures.

use super::*;
use crate::tls::PeerIdentity;

#[test]
fn hash_is_sha256_hex() {
    assert_eq!(
        hash_token("abc"),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
    assert!(parse_hex32(&hash_token("abc").to_uppercase()).is_some());
    assert!(parse_hex32("zz").is_none());
}

#[test]
fn bad_options_are_refused() {
    let user = |name: &str, hash: &str| UserOptions {
        name: name.into(),
        token_sha256: Some(hash.into()),
        cert_subject: None,
        read: vec![],
        write: vec![],
    };
    let options = |users| AuthOptions {
        users,
        max_failures: DEFAULT_MAX_FAILURES,
    };
    assert!(AuthHook::new(options(vec![])).is_err());
    let err = AuthHook::new(options(vec![user("a", "1234")]))
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("token_sha256"), "{err}");
    let h = hash_token("t");
    assert!(AuthHook::new(options(vec![user("a", &h), user("b", &h)])).is_err());
    assert!(AuthHook::new(options(vec![user("a", &h), user("a", &hash_token("u"))])).is_err());
}

#[test]
fn bad_options_are_told_apart_by_type() {
    let user = |name: &str, hash: &str| UserOptions {
        name: name.into(),
        token_sha256: Some(hash.into()),
        cert_subject: None,
        read: vec![],
        write: vec![],
    };
    let new = |users, max_failures| {
        AuthHook::new(AuthOptions {
            users,
            max_failures,
        })
    };
    let h = hash_token("t");
    assert!(matches!(new(vec![], 3), Err(AuthOptionsError::NoUsers)));
    assert!(matches!(
        new(vec![user("a", &h)], 0),
        Err(AuthOptionsError::MaxFailures(0))
    ));
    assert!(matches!(
        new(vec![user("a", &h), user("b", "12")], 3),
        Err(AuthOptionsError::BadHash { index: 2, ref name }) if name == "b"
    ));
    assert!(matches!(
        new(vec![user("a", &h), user("b", &h)], 3),
        Err(AuthOptionsError::SameHash { index: 2, .. })
    ));
    assert!(matches!(
        new(vec![user("a", &h), user("a", &hash_token("u"))], 3),
        Err(AuthOptionsError::SameName { index: 2, .. })
    ));
}

fn cert_user(name: &str, subject: &str) -> UserOptions {
    UserOptions {
        name: name.into(),
        token_sha256: None,
        cert_subject: Some(subject.into()),
        read: vec!["in*".into()],
        write: vec![],
    }
}

#[test]
fn a_user_needs_a_token_or_a_certificate_name_and_names_are_checked() {
    let new = |users| {
        AuthHook::new(AuthOptions {
            users,
            max_failures: DEFAULT_MAX_FAILURES,
        })
    };
    let mut neither = cert_user("ghost", "CN=x");
    neither.cert_subject = None;
    let err = new(vec![neither]).err().unwrap();
    assert!(matches!(
        err,
        AuthOptionsError::NoCredential { index: 1, .. }
    ));
    assert_eq!(
        err.to_string(),
        "users[1] (ghost): needs token_sha256, cert_subject, or both (nothing would grant this user)"
    );
    let err = new(vec![cert_user("a", "billing")]).err().unwrap();
    assert!(
        err.to_string().starts_with(
            "users[1] (a): cert_subject \"billing\" is not a certificate name: write \"CN=<common name>\""
        ),
        "{err}"
    );
    let err = new(vec![
        cert_user("a", "DNS:x.corp"),
        cert_user("b", "DNS:X.Corp"),
    ])
    .err()
    .unwrap();
    assert!(
        matches!(err, AuthOptionsError::SameCertSubject { index: 2, ref subject, .. } if subject == "DNS:x.corp"),
        "{err}"
    );
    // Token and certificate on one user; a certificate-only user.
    let mut both = cert_user("both", "CN=both");
    both.token_sha256 = Some(hash_token("t"));
    new(vec![both, cert_user("billing", "CN=billing")]).unwrap();
}

fn identity(names: &[&str]) -> PeerIdentity {
    PeerIdentity {
        subject: names.join(", "),
        names: names.iter().map(|n| n.parse().unwrap()).collect(),
    }
}

#[test]
fn a_certificate_grants_its_user_at_the_first_request_and_a_token_can_replace_it() {
    let mut admin = cert_user("admin", "CN=admin");
    admin.token_sha256 = Some(hash_token("admin-token"));
    admin.read = vec!["*".into()];
    let hook = AuthHook::new(AuthOptions {
        users: vec![
            cert_user("billing", "DNS:billing.corp"),
            cert_user("second", "CN=billing"),
            admin,
        ],
        max_failures: 3,
    })
    .unwrap();
    let peer = "127.0.0.1:1".parse().unwrap();
    let read = |table: &str| CommandRequest::new_hget(table, "k");
    let status = |flow: Flow| match flow {
        ControlFlow::Continue(()) => 200,
        ControlFlow::Break(res) => res.status,
    };

    // The first user (in config order) whose name the certificate carries.
    let mut ctx =
        HookCtx::new(1, peer).with_identity(identity(&["CN=billing", "DNS:billing.corp"]));
    assert_eq!(status(hook.on_received(&mut ctx, &read("invoices"))), 200);
    assert_eq!(ctx.principal.as_deref(), Some("billing"));
    assert_eq!(status(hook.on_received(&mut ctx, &read("users"))), 403);
    // A token replaces it; a wrong one is 401 and the certificate's
    // user serves the next request.
    let auth = |token: &str| CommandRequest::new_auth(token);
    assert_eq!(
        status(hook.on_received(&mut ctx, &auth("admin-token"))),
        200
    );
    assert_eq!(ctx.principal.as_deref(), Some("admin"));
    assert_eq!(status(hook.on_received(&mut ctx, &read("users"))), 200);
    assert_eq!(status(hook.on_received(&mut ctx, &auth("wrong"))), 401);
    assert_eq!(ctx.principal, None);
    assert_eq!(status(hook.on_received(&mut ctx, &read("users"))), 403);
    assert_eq!(ctx.principal.as_deref(), Some("billing"));

    // A certificate no user names: 401 that says so; no certificate: as before.
    let mut ctx = HookCtx::new(2, peer).with_identity(identity(&["CN=stranger"]));
    let ControlFlow::Break(res) = hook.on_received(&mut ctx, &read("invoices")) else {
        panic!("a stranger's certificate was granted");
    };
    assert_eq!(res.status, 401);
    assert!(
        res.message.contains("certificate (CN=stranger)"),
        "{}",
        res.message
    );
    let mut ctx = HookCtx::new(3, peer);
    assert_eq!(status(hook.on_received(&mut ctx, &read("invoices"))), 401);
    assert_eq!(
        status(hook.on_received(&mut ctx, &auth("admin-token"))),
        200
    );
}
