/* postern-relay: command line, signals, and the loop. */
#include <errno.h>
#include <getopt.h>
#include <malloc.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include <sodium.h>

#include "log.h"
#include "loop.h"
#include "relay.h"

static void
usage(FILE *f)
{
	fprintf(f,
	    "usage: postern-relay --config relay.ini [--listen HOST:PORT]\n"
	    "                     [--tls-cert FILE --tls-key FILE] [-v|-q]...\n"
	    "\n"
	    "  -c, --config FILE       relay.ini: settings, server and client keys\n"
	    "  -l, --listen HOST:PORT  address to serve on (overrides [relay] listen;\n"
	    "                          port 0 picks a free port)\n"
	    "      --tls-cert FILE     serve HTTPS with this PEM certificate (chain)\n"
	    "                          (overrides [relay] tls_cert)\n"
	    "      --tls-key FILE      ... and this unencrypted PEM private key\n"
	    "                          (overrides [relay] tls_key)\n"
	    "  -v, --verbose           more log output (repeat for debug)\n"
	    "  -q, --quiet             less log output (repeat for errors only)\n"
	    "  -h, --help              this help\n"
	    "\n"
	    "See docs/relay.md for every setting of relay.ini.\n");
}

static void
main_signal(struct loop *l, int fd, int events, void *arg)
{
	struct signalfd_siginfo si;

	(void)events;
	(void)arg;
	if (read(fd, &si, sizeof(si)) != (ssize_t)sizeof(si))
		return;
	log_info("%s: stopping", strsignal((int)si.ssi_signo));
	loop_stop(l);
}

/* A command-line value replaces relay.ini's. */
static int
main_override(char **dst, const char *flag)
{
	char *c;

	if (flag == NULL)
		return 0;
	if ((c = strdup(flag)) == NULL)
		return -1;
	free(*dst);
	*dst = c;
	return 0;
}

/* Each tunnel holds several sockets: take all the open-file room the
 * hard limit allows. */
static void
main_raise_nofile(void)
{
	struct rlimit r;

	if (getrlimit(RLIMIT_NOFILE, &r) == 0 && r.rlim_cur < r.rlim_max) {
		r.rlim_cur = r.rlim_max;
		if (setrlimit(RLIMIT_NOFILE, &r) == -1)
			log_warn("cannot raise the open-file limit: %s", strerror(errno));
	}
}

int
main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "config",  required_argument, NULL, 'c' },
		{ "listen",  required_argument, NULL, 'l' },
		{ "tls-cert", required_argument, NULL, 'C' },
		{ "tls-key", required_argument, NULL, 'K' },
		{ "verbose", no_argument,       NULL, 'v' },
		{ "quiet",   no_argument,       NULL, 'q' },
		{ "help",    no_argument,       NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char *config = NULL, *listen = NULL, *tls_cert = NULL, *tls_key = NULL;
	/* Room for messages that name files (two TLS paths and GnuTLS's
	 * reason). */
	char err[4 * RELAY_ERR_MAX + 2 * 1024], host[256], port[16];
	struct relay_config *cf = NULL;
	struct relay *rl = NULL;
	struct loop *l = NULL;
	sigset_t mask;
	int c, sfd = -1, rc = 1;

	/* Buffers of 128 KiB and more (windows, pipes, curl's) come from
	 * mmap and go back to the kernel when freed, so a burst of traffic
	 * does not leave the heap large; glibc's default threshold grows
	 * past them after the first free and keeps them in the heap. */
	mallopt(M_MMAP_THRESHOLD, 128 * 1024);
	log_init("relay", LOG_INFO);
	opterr = 0;
	while ((c = getopt_long(argc, argv, ":c:l:vqh", opts, NULL)) != -1) {
		switch (c) {
		case 'c':
			config = optarg;
			break;
		case 'l':
			listen = optarg;
			break;
		case 'C':
			tls_cert = optarg;
			break;
		case 'K':
			tls_key = optarg;
			break;
		case 'v':
			log_adjust(1);
			break;
		case 'q':
			log_adjust(-1);
			break;
		case 'h':
			usage(stdout);
			return 0;
		case ':':
			if (optopt != 0 && strncmp(argv[optind - 1], "--", 2) != 0)
				fprintf(stderr, "postern-relay: -%c needs a value\n", optopt);
			else
				fprintf(stderr, "postern-relay: %s needs a value\n",
				    argv[optind - 1]);
			fprintf(stderr, "Try 'postern-relay -h'.\n");
			return 2;
		default:
			if (optopt != 0 && strncmp(argv[optind - 1], "--", 2) != 0)
				fprintf(stderr, "postern-relay: unknown option '-%c'\n", optopt);
			else
				fprintf(stderr, "postern-relay: unknown option '%s'\n",
				    argv[optind - 1]);
			fprintf(stderr, "Try 'postern-relay -h'.\n");
			return 2;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "postern-relay: unexpected argument '%s'\n", argv[optind]);
		fprintf(stderr, "Try 'postern-relay -h'.\n");
		return 2;
	}
	if (config == NULL) {
		fprintf(stderr, "postern-relay: --config relay.ini is required\n");
		fprintf(stderr, "Try 'postern-relay -h'.\n");
		return 2;
	}
	if (listen != NULL && config_split_hostport(listen, host, sizeof(host), port,
	    sizeof(port), err, sizeof(err)) == -1) {
		fprintf(stderr, "postern-relay: --listen: %s\n", err);
		return 2;
	}
	if (sodium_init() < 0) {
		log_error("libsodium failed to initialise");
		return 1;
	}
	if ((cf = config_load(config, err, sizeof(err))) == NULL) {
		log_error("%s", err);
		return 1;
	}
	if (listen != NULL) {
		free(cf->cf_listen);
		if ((cf->cf_listen = strdup(listen)) == NULL) {
			log_error("out of memory");
			goto done;
		}
	}
	if (main_override(&cf->cf_tls_cert, tls_cert) == -1 ||
	    main_override(&cf->cf_tls_key, tls_key) == -1) {
		log_error("out of memory");
		goto done;
	}
	/* relay.ini alone cannot get here with one of them (config.c says
	 * which line); a flag can. */
	if ((cf->cf_tls_cert == NULL) != (cf->cf_tls_key == NULL)) {
		fprintf(stderr, "postern-relay: %s without %s: HTTPS needs both "
		    "the certificate and its key\n", tls_cert ? "--tls-cert" :
		    "--tls-key", tls_cert ? "--tls-key" : "--tls-cert");
		fprintf(stderr, "Try 'postern-relay -h'.\n");
		rc = 2;
		goto done;
	}
	main_raise_nofile();
	signal(SIGPIPE, SIG_IGN);
	sigemptyset(&mask);
	sigaddset(&mask, SIGINT);
	sigaddset(&mask, SIGTERM);
	if (sigprocmask(SIG_BLOCK, &mask, NULL) == -1 ||
	    (sfd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC)) == -1) {
		log_error("cannot set up signal handling: %s", strerror(errno));
		goto done;
	}
	if ((l = loop_new()) == NULL) {
		log_error("cannot create the event loop: %s", strerror(errno));
		goto done;
	}
	if (loop_watch(l, sfd, LOOP_READ, main_signal, NULL) == -1) {
		log_error("cannot watch signals: %s", strerror(errno));
		goto done;
	}
	if ((rl = relay_new(l, cf, err, sizeof(err))) == NULL) {
		log_error("%s", err);
		goto done;
	}
	log_info("listening on %s://%s (%zu servers, %zu clients)",
	    cf->cf_tls_cert != NULL ? "https" : "http", relay_address(rl),
	    cf->cf_nservers, cf->cf_nclients);
	if (loop_run(l) == -1) {
		log_error("event loop failed: %s", strerror(errno));
		goto done;
	}
	rc = 0;
done:
	relay_free(rl);
	if (l != NULL && sfd >= 0)
		loop_unwatch(l, sfd);
	if (sfd >= 0)
		close(sfd);
	loop_free(l);
	config_free(cf);
	return rc;
}
