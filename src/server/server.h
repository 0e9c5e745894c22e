/* server.h — entry points of the OpenAI-compatible server, called by
 * src/cli/main.c for `vllmc serve ...` and `vllmc bench serve ...`.
 * argv[0] is the subcommand ("serve" / "serve" after "bench"). Both return the
 * process exit status: 0 ok, 1 failure (model load, listen), 2 usage error. */
#ifndef VLLMC_SERVER_H
#define VLLMC_SERVER_H

int vllmc_serve_main(int argc, char **argv);
/* The model served when the command line names none (the CLI sets the
 * bundled demo model's directory). */
void vllmc_serve_set_default_model(const char *dir);
int vllmc_bench_serve_main(int argc, char **argv);

#endif
