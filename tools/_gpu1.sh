export PYTHONUNBUFFERED=1
nvidia-smi -L
timeout 330 python3 tools/bench_train.py --devices 1 --target-layers 4 --remat full,dots,none --steps 4 --profile $OUT/prof --out $OUT/train_variants.json > $OUT/train_variants.txt 2> $OUT/train_variants.err
tail -3 $OUT/train_variants.err
timeout 240 python3 tools/bench_train.py --devices 1 --remat dots --steps 4 --out $OUT/train_full.json > $OUT/train_full.txt 2> $OUT/train_full.err
tail -3 $OUT/train_full.err
grep -v '^{' $OUT/train_variants.txt; grep -v '^{' $OUT/train_full.txt
grep -A12 "device kernel time" $OUT/train_variants.err | cut -c1-160
