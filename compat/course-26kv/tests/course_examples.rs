//! What the course's examples do, on loopback: its server loop (a hookv
//! `Service` behind `async-prost` framing) answering its client's requests,
//! both using hookv's own message types. The examples themselves
//! (`examples/server.rs`, `client.rs`) bind the course's fixed port, so this
//! test runs the same code on port 0; `cargo test` builds the examples too.
use std::time::Duration;

use async_prost::AsyncProstStream;
use futures::prelude::*;
use hookv::{CommandRequest, CommandResponse, MemTable, Service, ServiceInner, Value};
use tokio::net::{TcpListener, TcpStream};

#[tokio::test]
async fn the_course_client_and_server_talk_through_hookv_types() {
    let service: Service = ServiceInner::new(MemTable::new()).into();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        // One client, as the example's loop serves each.
        let (stream, _) = listener.accept().await.unwrap();
        let mut stream =
            AsyncProstStream::<_, CommandRequest, CommandResponse, _>::from(stream).for_async();
        while let Some(Ok(cmd)) = stream.next().await {
            let res = service.execute(cmd);
            stream.send(res).await.unwrap();
        }
    });

    let talk = async {
        let stream = TcpStream::connect(addr).await.unwrap();
        let mut client =
            AsyncProstStream::<_, CommandResponse, CommandRequest, _>::from(stream).for_async();
        let cmd = CommandRequest::new_hset("table1", "hello", "world".to_string().into());
        client.send(cmd).await.unwrap();
        let first = client.next().await.unwrap().unwrap();
        client
            .send(CommandRequest::new_hget("table1", "hello"))
            .await
            .unwrap();
        let second = client.next().await.unwrap().unwrap();
        client
            .send(CommandRequest::new_hget("table1", "nope"))
            .await
            .unwrap();
        let third = client.next().await.unwrap().unwrap();
        drop(client);
        (first, second, third)
    };
    let (first, second, third) = tokio::time::timeout(Duration::from_secs(10), talk)
        .await
        .expect("the exchange finished");
    assert_eq!((first.status, first.values), (200, vec![Value::default()]));
    assert_eq!((second.status, second.values), (200, vec!["world".into()]));
    assert_eq!(third.status, 404);
    assert!(third.message.starts_with("Not found"), "{}", third.message);
    tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("the server saw the client leave")
        .unwrap();
}
