/*
 * In-process TLS read loop for measuring llmtap's per-call capture cost.
 *
 * A TLS client and server run in one thread, joined by an OpenSSL BIO pair,
 * so no socket syscalls happen: each iteration is one SSL_write of SIZE bytes
 * by the server and one SSL_read of them by the client, both through the
 * system libssl that llmtap hooks. Prints {"iterations":N,"ns_per_iteration":X}.
 *
 * usage: ssl_read_loop CERT.pem KEY.pem [ITERATIONS] [SIZE]
 */
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static void die(const char *what)
{
	fprintf(stderr, "ssl_read_loop: %s\n", what);
	ERR_print_errors_fp(stderr);
	exit(1);
}

static double now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e9 + ts.tv_nsec;
}

int main(int argc, char **argv)
{
	if (argc < 3)
		die("usage: ssl_read_loop CERT.pem KEY.pem [ITERATIONS] [SIZE]");
	long iterations = argc > 3 ? atol(argv[3]) : 200000;
	int size = argc > 4 ? atoi(argv[4]) : 64;
	char buf[16384];
	if (size <= 0 || size > (int)sizeof(buf))
		die("SIZE must be 1..16384");

	SSL_CTX *server_ctx = SSL_CTX_new(TLS_server_method());
	SSL_CTX *client_ctx = SSL_CTX_new(TLS_client_method());
	if (!server_ctx || !client_ctx)
		die("SSL_CTX_new");
	if (SSL_CTX_use_certificate_file(server_ctx, argv[1], SSL_FILETYPE_PEM) != 1 ||
	    SSL_CTX_use_PrivateKey_file(server_ctx, argv[2], SSL_FILETYPE_PEM) != 1)
		die("loading the certificate and key");
	SSL *server = SSL_new(server_ctx);
	SSL *client = SSL_new(client_ctx);
	BIO *client_bio, *server_bio;
	if (!BIO_new_bio_pair(&client_bio, 0, &server_bio, 0))
		die("BIO_new_bio_pair");
	SSL_set_bio(client, client_bio, client_bio);
	SSL_set_bio(server, server_bio, server_bio);
	SSL_set_connect_state(client);
	SSL_set_accept_state(server);

	for (int round = 0; round < 100; round++) {
		int c = SSL_do_handshake(client);
		int s = SSL_do_handshake(server);
		if (c == 1 && s == 1)
			break;
		if (round == 99)
			die("handshake did not finish");
	}
	for (int i = 0; i < size; i++)
		buf[i] = 'a' + i % 26;

	double start = now_ns();
	for (long i = 0; i < iterations; i++) {
		if (SSL_write(server, buf, size) != size)
			die("SSL_write");
		if (SSL_read(client, buf, size) != size)
			die("SSL_read");
	}
	double elapsed = now_ns() - start;
	printf("{\"iterations\":%ld,\"size\":%d,\"ns_per_iteration\":%.1f}\n", iterations, size, elapsed / iterations);
	return 0;
}
