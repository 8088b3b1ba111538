#!/usr/bin/env bash
# Reproduce the built-in model from nothing: data, three stages, assembly. Resumable: run it again after
# an interruption and every stage continues from its newest checkpoint (finished stages are skipped).
# Run from a working folder; it writes data/ and runs/ there. CPU threads per process: THREADS (default 1).
set -euo pipefail
CONFIGS="$(cd "$(dirname "$0")" && pwd)"
THREADS="${THREADS:-1}"
export OMP_NUM_THREADS="$THREADS"
mkdir -p data runs

[ -f data/shapes/manifest.json ] || fusionframes data synth --out data/shapes --videos 3000 --frames 29 \
    --size 128 --seed 0 --shard-size 500
# The interpolation stage uses the first 1500 clips (3 shards): it needs every frame encoded.
mkdir -p data/shapes-half
for i in 0 1 2; do ln -sf "../shapes/shard-00000$i.tar" data/shapes-half/; done

stage() {  # stage NAME CONFIG DATA OUT
    if [ -f "$4/model/model_index.json" ]; then return; fi
    local extra=()
    if compgen -G "$4/checkpoints/step-*/state/COMPLETE" > /dev/null; then extra+=(--resume); fi
    if [ -n "${5:-}" ]; then extra+=(--init "$5"); fi
    fusionframes train "$1" --config "$CONFIGS/$2" --data "$3" --out "$4" "${extra[@]}"
}

stage movq movq.yaml data/shapes runs/movq
# Stages 2 and 3, and a decoder-only MoVQ fine-tune, run side by side (one thread each).
stage keyframes keyframes.yaml data/shapes runs/keyframes runs/movq/model &
stage interpolation interpolation.yaml data/shapes-half runs/interpolation runs/movq/model &
stage movq movq_decoder.yaml data/shapes-half runs/movq_decoder runs/movq/model &
wait
# Stages 2b and 3b continue from the raw weights of 2 and 3 (the configs name the checkpoints) with
# frame-shared keyframe noise and a residual interpolation model.
stage keyframes keyframes_2.yaml data/shapes runs/keyframes2 &
( stage interpolation interpolation_2.yaml data/shapes-half runs/interpolation2
  stage interpolation interpolation_3.yaml data/shapes-half runs/interpolation3 ) &
wait
# Stage 2c continues the keyframes from 2b's raw weights at step 5000 with min-SNR loss weighting.
stage keyframes keyframes_3.yaml data/shapes runs/keyframes3
# Stage 2d continues from 2c's raw weights at step 8000 with reversed clips and noisy-timestep weighting.
stage keyframes keyframes_4.yaml data/shapes runs/keyframes4
# Stage 2e continues from 2d's raw weights at step 7000 with the text-aware frame embedding.
stage keyframes keyframes_5.yaml data/shapes runs/keyframes5

fusionframes assemble --keyframes runs/keyframes5/model --interpolation runs/interpolation3/model \
    --movq runs/movq_decoder/model --out runs/assembled --name fusionframes-builtin --half \
    --sampling "$(cat "$CONFIGS/sampling.json")" \
    --description "FusionFrames built-in: trained on the synthetic shapes world (docs/synthetic_world.md)"

# The layout prior (minutes): fitted on a second data set with the same seed and captions whose paths are
# centred in the frame, so where the object is in each keyframe follows from the words; it learns the
# objects' tracks (two slots: up to two objects per clip) and their colour and shape from the clips' ground
# truth. At strength 0.02 of the 50 keyframe steps (sampling.json) the keyframe U-Net refines the drawn
# layout in one step at low noise.
[ -f data/shapes-centred/manifest.json ] || fusionframes data synth --out data/shapes-centred --videos 3000 \
    --frames 29 --size 128 --seed 0 --shard-size 500 --path-jitter 0.08
fusionframes layout-prior --model runs/assembled --data data/shapes-centred --out builtin --half \
    --foreground-weight 50 --steps 2000 --object-slots 2 --object-labels colour,shape --strength 0.02 --blur 0 \
    --cache runs/latents-centred.safetensors

# Kandinsky Video 1.1 parts (docs/training.md, "Kandinsky Video 1.1 parts"): the temporal MoVQ decoder and
# the image-to-video keyframe U-Net, both made from the built-in folder just written with their new parts
# at zero, side by side (one thread each), on the first 800 clips of the same world (seed 0).
[ -f data/shapes-800/manifest.json ] || fusionframes data synth --out data/shapes-800 --videos 800 \
    --frames 29 --size 128 --seed 0 --shard-size 400
# Stage 1.1a (64 px crops) is kept for the record; 1.1b decodes whole frames and is the one measured
# against the image decoder (docs/training.md, "Whole-frame decoder").
stage movq movq_video.yaml data/shapes-800 runs/movq_video builtin &
stage keyframes keyframes_image.yaml data/shapes-800 runs/keyframes_image builtin &
wait
stage movq movq_video_full.yaml data/shapes-800 runs/movq_video_full builtin
# Stages 1c and 1d: the image MoVQ's decoder again, encoder frozen, with the loss weighted towards objects
# (small stars kept their points), then on the same clips plus clips with the opt-in colour pink.
stage movq movq_small_objects.yaml data/shapes-800 runs/movq_small builtin
[ -f data/pink/manifest.json ] || fusionframes data synth --out data/pink --videos 300 --frames 29 \
    --size 128 --seed 7 --shard-size 300 --new-colour-share 0.5
mkdir -p data/mixed
ln -sf ../shapes-800/shard-000000.tar data/mixed/shapes-0.tar
ln -sf ../shapes-800/shard-000001.tar data/mixed/shapes-1.tar
ln -sf ../pink/shard-000000.tar data/mixed/pink-0.tar
stage movq movq_colours.yaml data/mixed runs/movq_colours
# The shipped built-in folder (src/fusionframes/builtin): both 1.1 parts and the 1d image decoder.
fusionframes add-parts --model builtin --out builtin11 --video-movq runs/movq_video_full/model \
    --image-keyframes runs/keyframes_image/model --image-decoder runs/movq_colours/model --decoder image --half
