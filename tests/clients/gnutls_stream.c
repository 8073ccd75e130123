/*
 * A streaming chat-completions client on GnuTLS (gnutls_record_send/recv in
 * libgnutls.so.30), for the test that llmtap captures GnuTLS programs.
 *
 *     cc -o gnutls_stream gnutls_stream.c -lgnutls
 *     gnutls_stream 127.0.0.1 PORT ca.pem MODEL
 *
 * Exits 0 when the response is a 200 stream that reached `data: [DONE]`.
 */
#include <arpa/inet.h>
#include <gnutls/gnutls.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static void fail(const char *what, int rc)
{
	fprintf(stderr, "%s: %s\n", what, rc < 0 ? gnutls_strerror(rc) : "failed");
	exit(1);
}

int main(int argc, char **argv)
{
	if (argc != 5) {
		fprintf(stderr, "usage: %s HOST PORT CA_FILE MODEL\n", argv[0]);
		return 2;
	}
	struct sockaddr_in addr = { .sin_family = AF_INET, .sin_port = htons(atoi(argv[2])) };
	if (inet_pton(AF_INET, argv[1], &addr.sin_addr) != 1)
		fail("address", 0);
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	if (fd < 0 || connect(fd, (struct sockaddr *)&addr, sizeof(addr)) != 0)
		fail("connect", 0);

	gnutls_certificate_credentials_t creds;
	gnutls_session_t session;
	int rc;
	if ((rc = gnutls_certificate_allocate_credentials(&creds)) < 0)
		fail("credentials", rc);
	if ((rc = gnutls_certificate_set_x509_trust_file(creds, argv[3], GNUTLS_X509_FMT_PEM)) <= 0)
		fail("trust file", rc);
	if ((rc = gnutls_init(&session, GNUTLS_CLIENT)) < 0)
		fail("init", rc);
	gnutls_set_default_priority(session);
	gnutls_credentials_set(session, GNUTLS_CRD_CERTIFICATE, creds);
	gnutls_session_set_verify_cert(session, argv[1], 0);
	gnutls_transport_set_int(session, fd);
	do {
		rc = gnutls_handshake(session);
	} while (rc < 0 && !gnutls_error_is_fatal(rc));
	if (rc < 0)
		fail("handshake", rc);

	char body[256], request[1024];
	snprintf(body, sizeof(body),
		 "{\"model\":\"%s\",\"stream\":true,\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}",
		 argv[4]);
	int len = snprintf(request, sizeof(request),
			   "POST /v1/chat/completions HTTP/1.1\r\nHost: %s\r\n"
			   "Content-Type: application/json\r\nContent-Length: %zu\r\n"
			   "Connection: close\r\n\r\n%s",
			   argv[1], strlen(body), body);
	if ((rc = gnutls_record_send(session, request, len)) != len)
		fail("send", rc);

	static char response[1 << 16];
	size_t got = 0;
	for (;;) {
		ssize_t n = gnutls_record_recv(session, response + got, sizeof(response) - 1 - got);
		if (n == GNUTLS_E_AGAIN || n == GNUTLS_E_INTERRUPTED)
			continue;
		/* The server may close without close_notify: that ends the body. */
		if (n <= 0 || got + n >= sizeof(response) - 1)
			break;
		got += n;
	}
	response[got] = 0;
	gnutls_bye(session, GNUTLS_SHUT_RDWR);
	close(fd);
	gnutls_deinit(session);
	gnutls_certificate_free_credentials(creds);
	if (strncmp(response, "HTTP/1.1 200", 12) != 0 || !strstr(response, "data: [DONE]")) {
		fprintf(stderr, "unexpected response: %.200s\n", response);
		return 1;
	}
	return 0;
}
