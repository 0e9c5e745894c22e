/* modeldir.h — turn a model argument into a checkpoint directory.
 *
 * A model argument is a local directory (used as is), or "ORG/NAME" looked up
 * in the Hugging Face cache layout: $HF_HUB_CACHE, else $HF_HOME/hub, else
 * ~/.cache/huggingface/hub, then models--ORG--NAME/snapshots/<rev>/ where
 * <rev> is the commit named by refs/main if present, else the only (or the
 * most recently modified) snapshot. No network access: a model not found is
 * an error naming every place that was looked at.
 *
 * Does not: read config.json or any weights. */
#ifndef VLLMC_MODELDIR_H
#define VLLMC_MODELDIR_H

#include <stddef.h>

int modeldir_resolve(const char *arg, char *out, size_t outlen, char *err, size_t errlen);

#endif
