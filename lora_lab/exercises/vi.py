"""The Vietnamese messages of the exercise checks: {English template: Vietnamese template}.

Terms follow notebooks/vi/GLOSSARY.md. Each Vietnamese template keeps the English one's placeholders
({name}, {got:,}, …) unchanged; tests/test_exercise_messages.py checks that, and that every template the
checks use has an entry here and no entry is left over.
"""

MESSAGES = {
    # ------------------------------------------------------------------------- the verdict (verdict.py)
    "Exercise {number} · {name}": "Bài tập {number} · {name}",
    "correct": "đúng",
    "not done yet": "chưa làm",
    "not yet right": "chưa đúng",
    " (line {line} of your code: `{source}`)": " (dòng {line} trong code của bạn: `{source}`)",
    " (line {line} of your code)": " (dòng {line} trong code của bạn)",
    "your code raised {error}: {detail}{where}": "code của bạn báo lỗi {error}: {detail}{where}",
    "it still raises NotImplementedError: write your answer in place of the `raise` line and run the cell again.":
        "hàm vẫn còn ném ra NotImplementedError: hãy viết câu trả lời của bạn thay cho dòng `raise`, rồi chạy lại "
        "ô code này.",
    "{name} should be a torch.Tensor, got {kind}.": "{name} phải là một torch.Tensor, nhưng lại là {kind}.",
    "return a number, got {kind}.": "hãy trả về một số; bạn trả về {kind}.",
    "return an int, got {kind}.": "hãy trả về một số nguyên (int); bạn trả về {kind}.",
    "your code raised {error}: {detail}{where}. {hint}": "code của bạn báo lỗi {error}: {detail}{where}. {hint}",
    "A is (r, in) = ({r}, {fin}), B is (out, r) = ({fout}, {r})":
        "A có kích thước (r, in) = ({r}, {fin}), B có kích thước (out, r) = ({fout}, {r})",
    ", W is (out, in) = ({fout}, {fin})": ", W có kích thước (out, in) = ({fout}, {fin})",
    " and x is (…, in) = {shape}": " và x có kích thước (…, in) = {shape}",
    "The shapes do not fit: {shapes}. PyTorch stores a weight as (out, in), so a weight multiplies x transposed, "
    "x @ W.T, and A comes first: x @ A.T is (…, r), then @ B.T is (…, out); ΔW = B @ A is (out, in).":
        "Các kích thước không khớp nhau: {shapes}. PyTorch lưu trọng số dạng (out, in), nên trọng số nhân với x ở "
        "dạng chuyển vị, x @ W.T, và A đi trước: x @ A.T có kích thước (…, r), rồi @ B.T cho (…, out); ΔW = B @ A có "
        "kích thước (out, in).",
    "you passed an object already built from your class ({kind}(…)); pass the class itself, {name}, with no "
    "parentheses: the check builds its own layers, with sizes of its own.":
        "bạn đã truyền vào một đối tượng đã được tạo từ class của bạn ({kind}(…)); hãy truyền chính class đó, "
        "{name}, không kèm dấu ngoặc: hàm kiểm tra tự tạo các lớp của riêng nó, với kích thước riêng.",
    "pass your class itself, {name}, with no parentheses; you passed {kind}.":
        "hãy truyền vào chính class của bạn, {name}, không kèm dấu ngoặc; bạn đã truyền {kind}.",
    "pass your function, {name}, not the class {kind}: the check calls it on inputs of its own.":
        "hãy truyền vào hàm của bạn, {name}, chứ không phải class {kind}: hàm kiểm tra tự gọi hàm đó với các đầu "
        "vào riêng.",
    "pass your function itself, {name}, with no parentheses: you passed a value, {value} ({kind}), which is what "
    "a call returns. The check calls {name} on inputs of its own.":
        "hãy truyền vào chính hàm của bạn, {name}, không kèm dấu ngoặc: bạn đã truyền một giá trị, {value} "
        "({kind}), tức là thứ một lần gọi hàm trả về. Hàm kiểm tra tự gọi {name} với các đầu vào riêng.",

    # ------------------------------------------------------------------------- 00 start here
    "return a torch dtype, not the string {got!r}: the dtypes are objects of torch (torch.<name>).":
        "hãy trả về một dtype của torch, không phải chuỗi {got!r}: các dtype là đối tượng của torch (torch.<tên>).",
    "return a torch dtype, got {kind}.": "hãy trả về một dtype của torch; bạn trả về {kind}.",
    "for gpu_name=None (a CPU) you chose {got}: on a CPU, half-precision (16-bit) matmuls are slow or not "
    "supported at all, so compute at full precision.":
        "với gpu_name=None (máy chỉ có CPU) bạn chọn {got}: trên CPU, phép nhân ma trận ở độ chính xác một nửa "
        "(16-bit) chạy chậm hoặc hoàn toàn không được hỗ trợ, nên hãy tính ở độ chính xác đầy đủ.",
    "for gpu_name={name!r} you chose {got}: it runs, but a GPU computes twice as fast in a 16-bit dtype it "
    "supports, and the weights take half the memory.":
        "với gpu_name={name!r} bạn chọn {got}: vẫn chạy được, nhưng GPU tính nhanh gấp đôi với một kiểu dữ liệu "
        "16-bit mà nó hỗ trợ, và trọng số chỉ chiếm một nửa bộ nhớ.",
    "for gpu_name={name!r}, bf16_supported=False you chose {got}: this GPU has no bf16. bf16 needs an Ampere GPU "
    "or newer (A100, L4, H100); older ones such as the T4 and the V100 lack it.":
        "với gpu_name={name!r}, bf16_supported=False bạn chọn {got}: GPU này không có bf16. bf16 cần GPU Ampere "
        "hoặc mới hơn (A100, L4, H100); các GPU cũ hơn như T4 và V100 không có.",
    "for gpu_name={name!r}, bf16_supported=True you chose {got}: this GPU has bf16, which keeps fp32's range in "
    "16 bits, so training needs no loss scaling.":
        "với gpu_name={name!r}, bf16_supported=True bạn chọn {got}: GPU này có bf16, kiểu dữ liệu giữ nguyên "
        "khoảng giá trị của fp32 trong 16 bit, nên khi huấn luyện không cần nhân hệ số cho giá trị mất mát "
        "(loss scaling).",
    "bf16 where the GPU has it, the other 16-bit dtype where it does not, full precision on a CPU: {cases} "
    "machines, all right.":
        "bf16 khi GPU có, kiểu 16-bit còn lại khi GPU không có, độ chính xác đầy đủ trên CPU: đúng cả {cases} máy.",
    "weights_gib({n:,}, {bits}) = {got:.4g} is in GB (10⁹ bytes); GPU memory such as the T4's 14.75 GiB is "
    "counted in GiB = 2**30 bytes.":
        "weights_gib({n:,}, {bits}) = {got:.4g} tính bằng GB (10⁹ byte); bộ nhớ GPU, như 14.75 GiB của T4, được tính "
        "bằng GiB = 2**30 byte.",
    "weights_gib({n:,}, {bits}) = {got:.4g}: that counts bits, not bytes; divide by 8.":
        "weights_gib({n:,}, {bits}) = {got:.4g}: đó là số bit, không phải số byte; hãy chia cho 8.",
    "weights_gib({n:,}, {bits}) = {got:.4g} GiB, which would be {back:.4g} bits per parameter, not {bits}: go "
    "from bits to bytes, then from bytes to GiB (2**30 bytes).":
        "weights_gib({n:,}, {bits}) = {got:.4g} GiB, tức là {back:.4g} bit mỗi tham số chứ không phải {bits}: "
        "hãy đổi từ bit sang byte, rồi từ byte sang GiB (2**30 byte).",
    "Llama-2-7B's weights take {fp16:.2f} GiB in fp16, and {nf4:.2f} GiB if every one were stored at NF4's "
    "{bits} bits.":
        "trọng số của Llama-2-7B chiếm {fp16:.2f} GiB ở fp16, và {nf4:.2f} GiB nếu mọi trọng số được lưu ở "
        "{bits} bit của NF4.",
    "return a string, got {kind}.": "hãy trả về một chuỗi; bạn trả về {kind}.",
    "almost: mind the spaces at the two ends of the row; yours is {got!r}.":
        "gần đúng rồi: hãy để ý khoảng trắng ở hai đầu dòng; dòng của bạn là {got!r}.",
    "a row starts with the BOS token <s>; got {got!r}.": "mỗi dòng bắt đầu bằng token BOS <s>; dòng của bạn là {got!r}.",
    "a row ends with the EOS token </s>, so the model learns to stop; got {got!r}.":
        "mỗi dòng kết thúc bằng token EOS </s>, để mô hình học được lúc nào cần dừng; dòng của bạn là {got!r}.",
    "the prompt sits between [INST] and [/INST]; got {got!r}.":
        "prompt nằm giữa [INST] và [/INST]; dòng của bạn là {got!r}.",
    "{got!r} leaves the data's format at character {at} (…{here!r}…): compare with a row of the instruction "
    "data, space by space.":
        "{got!r} lệch khỏi định dạng của dữ liệu từ ký tự thứ {at} (…{here!r}…): hãy so với một dòng của dữ liệu "
        "hướng dẫn, từng khoảng trắng một.",
    "your rows have the data's format, BOS to EOS, as in mlabonne/guanaco-llama2-1k.":
        "các dòng của bạn đúng định dạng của dữ liệu, từ BOS đến EOS, như trong mlabonne/guanaco-llama2-1k.",
    "On a CPU both arguments are None (there is no GPU to name): test for gpu_name is None before using it as a "
    "string.":
        "Trên CPU cả hai đối số đều là None (không có GPU nào để gọi tên): hãy kiểm tra gpu_name is None trước khi "
        "dùng nó như một chuỗi.",
    "MiB (2**20 bytes)": "MiB (2**20 byte)",
    "KiB (2**10 bytes)": "KiB (2**10 byte)",
    "weights_gib({n:,}, {bits}) = {got:.4g} is in {unit}; a GiB is 2**30 bytes, 1024 times 1024 times 1024.":
        "weights_gib({n:,}, {bits}) = {got:.4g} tính bằng {unit}; một GiB là 2**30 byte, tức 1024 × 1024 × 1024.",
    "weights_gib({n:,}, {bits}) = {got}: you rounded the result. Return the number as computed and round only "
    "where you print it (f\"{{x:.2f}}\"): for a small model, two decimals of a GiB can be off by more than 10%.":
        "weights_gib({n:,}, {bits}) = {got}: bạn đã làm tròn kết quả. Hãy trả về con số đúng như tính được và chỉ "
        "làm tròn khi in ra (f\"{{x:.2f}}\"): với một mô hình nhỏ, hai chữ số thập phân của GiB có thể lệch hơn "
        "10%.",
    "the prompt and the answer are swapped: the question goes inside [INST] … [/INST], the answer after it.":
        "prompt và câu trả lời bị đổi chỗ: câu hỏi nằm giữa [INST] … [/INST], câu trả lời đứng sau.",
    "for answer={answer!r} your row holds {written!r} where the answer goes. The data's rows read 'the answer is "
    "lemon.' because that sentence IS their answer; your function is given the answer already written, so put "
    "`answer` there exactly as it comes, with no words of your own around it.":
        "với answer={answer!r}, dòng của bạn chứa {written!r} ở chỗ dành cho câu trả lời. Các dòng của dữ liệu ghi "
        "'the answer is lemon.' vì chính cả câu đó LÀ câu trả lời của chúng; hàm của bạn nhận câu trả lời đã viết "
        "sẵn, nên hãy đặt `answer` vào đúng như khi nhận được, không thêm chữ nào của bạn quanh nó.",

    # ------------------------------------------------------------------------- 01 low-rank intuition
    "rank_r_matrix({d}, {k}, {r}) has shape {shape}; a d × k matrix is ({d}, {k}).":
        "rank_r_matrix({d}, {k}, {r}) có kích thước {shape}; một ma trận d × k có kích thước ({d}, {k}).",
    "multiply a random d × r matrix by a random r × k one (or add r outer products u·vᵀ)":
        "hãy nhân một ma trận ngẫu nhiên d × r với một ma trận ngẫu nhiên r × k (hoặc cộng r tích ngoài u·vᵀ)",
    "use r independent random directions: repeated or zero columns lower the rank":
        "hãy dùng r hướng ngẫu nhiên độc lập: các cột lặp lại hoặc bằng 0 làm giảm hạng",
    "rank_r_matrix({d}, {k}, {r}) has rank {got}, not r = {r}: {hint}.":
        "rank_r_matrix({d}, {k}, {r}) có hạng {got}, không phải r = {r}: {hint}.",
    "the matrix is all zeros.": "ma trận toàn số 0.",
    "a d × r matrix times an r × k matrix has rank r (and no more): that is the shape of LoRA's B·A.":
        "ma trận d × r nhân ma trận r × k có hạng r (và không hơn): đó chính là dạng của B·A trong LoRA.",
    "return the pair (B, A).": "hãy trả về cặp (B, A).",
    "B and A are swapped: return (B, A) with B of shape (d, r) and A of shape (r, k).":
        "B và A bị đổi chỗ: hãy trả về (B, A) với B có kích thước (d, r) và A có kích thước (r, k).",
    "B should be (d, r) = ({d}, {r}), got {shape}.": "B phải có kích thước (d, r) = ({d}, {r}), nhưng lại là {shape}.",
    "A should be (r, k) = ({r}, {k}), got {shape}.": "A phải có kích thước (r, k) = ({r}, {k}), nhưng lại là {shape}.",
    "the singular values are missing from the product: the r largest belong in B or A (or split between them)":
        "tích thiếu các giá trị suy biến: r giá trị lớn nhất phải nằm trong B hoặc A (hoặc chia cho cả hai)",
    "keep the r LARGEST singular values and their singular vectors":
        "hãy giữ r giá trị suy biến LỚN NHẤT và các vectơ suy biến của chúng",
    "for r={r}, ‖delta − B·A‖ = {err:.4f}, but the best rank-{r} approximation leaves {best:.4f}: {hint}.":
        "với r={r}, ‖delta − B·A‖ = {err:.4f}, trong khi xấp xỉ hạng {r} tốt nhất chỉ để lại {best:.4f}: {hint}.",
    "B·A is the best rank-r approximation: this turns any full fine-tuning update into a LoRA adapter (and, "
    "applied to W itself, is how PiSSA initialises LoRA).":
        "B·A là xấp xỉ hạng r tốt nhất: cách này biến bất kỳ cập nhật nào của tinh chỉnh toàn bộ thành một adapter "
        "LoRA (và khi áp dụng cho chính W, đó là cách PiSSA khởi tạo LoRA).",
    "for a {d} × {k} matrix, r = min(d, k) = {got} gives factors of {cost:,} numbers, more than the matrix's "
    "{full:,}.":
        "với ma trận {d} × {k}, r = min(d, k) = {got} cho hai thừa số gồm {cost:,} số, nhiều hơn {full:,} số của "
        "chính ma trận.",
    "for a {d} × {k} matrix, r = {got} costs {cost:,} numbers, not fewer than {full:,}.":
        "với ma trận {d} × {k}, r = {got} tốn {cost:,} số, không ít hơn {full:,}.",
    "for a {d} × {k} matrix, r = {more} still costs less ({cost:,} < {full:,}): go higher.":
        "với ma trận {d} × {k}, r = {more} vẫn tốn ít hơn ({cost:,} < {full:,}): hãy chọn r lớn hơn.",
    "LoRA's factors cost less than a 4096 × 4096 matrix up to r = {square}; LoRA uses r = 8 or 64 there, far "
    "below.":
        "các thừa số của LoRA vẫn tốn ít hơn ma trận 4096 × 4096 cho đến r = {square}; LoRA dùng r = 8 hoặc 64 ở "
        "đó, thấp hơn rất nhiều.",
    "A (d × r) matrix times an (r × k) one: the inner sizes must both be r, and the result is d × k.":
        "Một ma trận (d × r) nhân với một ma trận (r × k): hai kích thước ở giữa phải cùng là r, và kết quả có kích "
        "thước d × k.",

    # ------------------------------------------------------------------------- 02 LoRA from scratch
    "the layer has no `{attr}` attribute; use PEFT's names: base_layer (the frozen nn.Linear), lora_A (in → r) "
    "and lora_B (r → out).":
        "lớp không có thuộc tính `{attr}`; hãy dùng tên của PEFT: base_layer (nn.Linear đã đóng băng), lora_A "
        "(in → r) và lora_B (r → out).",
    "lora_A and lora_B are swapped: A reads the input, (r, in_features); B writes the output, (out_features, r).":
        "lora_A và lora_B bị đổi chỗ: A đọc đầu vào, (r, in_features); B ghi đầu ra, (out_features, r).",
    "lora_A.weight should be (r, in_features) = ({r}, {fin}), got {shape}.":
        "lora_A.weight phải có kích thước (r, in_features) = ({r}, {fin}), nhưng lại là {shape}.",
    "lora_B.weight should be (out_features, r) = ({fout}, {r}), got {shape}.":
        "lora_B.weight phải có kích thước (out_features, r) = ({fout}, {r}), nhưng lại là {shape}.",
    "MyLoRALinear should be an nn.Module (subclass nn.Module).":
        "MyLoRALinear phải là một nn.Module (kế thừa nn.Module).",
    "the base layer still trains: freeze it with base_layer.requires_grad_(False).":
        "lớp gốc vẫn đang được huấn luyện: hãy đóng băng nó bằng base_layer.requires_grad_(False).",
    "lora_A and lora_B must be trainable (requires_grad=True).":
        "lora_A và lora_B phải huấn luyện được (requires_grad=True).",
    "lora_B should start at zero, so that ΔW = B·A = 0 and training starts from the base model.":
        "lora_B phải được khởi tạo bằng 0, để ΔW = B·A = 0 và quá trình huấn luyện bắt đầu từ đúng mô hình gốc.",
    "lora_A should start random (Gaussian): with A = 0 as well, neither A nor B ever gets a gradient and training "
    "never starts.":
        "lora_A phải được khởi tạo ngẫu nhiên (phân phối Gaussian): nếu A cũng bằng 0 thì cả A lẫn B đều không bao "
        "giờ nhận được gradient và quá trình huấn luyện không bao giờ bắt đầu.",
    "at init (B = 0) the output must equal the base layer's output.":
        "lúc khởi tạo (B = 0), đầu ra phải bằng đầu ra của lớp gốc.",
    "with B ≠ 0 the output should be base_layer(x) + lora_B(lora_A(x)) · scaling; it isn't of that form.":
        "khi B ≠ 0, đầu ra phải là base_layer(x) + lora_B(lora_A(x)) · scaling; đầu ra của bạn không có dạng đó.",
    "the update is multiplied by {scale:.4g}; it should be lora_alpha / r = {alpha:g} / {r} = {scaling:g}.":
        "phần cập nhật đang được nhân với {scale:.4g}; nó phải được nhân với lora_alpha / r = {alpha:g} / {r} = "
        "{scaling:g}.",
    "no gradient reached lora_A or lora_B.": "không có gradient nào đến được lora_A hoặc lora_B.",
    "the base weight got a gradient: it must stay frozen.": "trọng số gốc nhận được gradient: nó phải được đóng băng.",
    "with B = 0 and dropout on, the output changed: dropout belongs on the LoRA path's input only, not on the base "
    "path.":
        "với B = 0 và dropout đang bật, đầu ra lại thay đổi: dropout chỉ áp dụng cho đầu vào của nhánh LoRA, không "
        "áp dụng cho nhánh gốc.",
    "lora_dropout=0.5 changed nothing in train mode: apply it to x before lora_A.":
        "lora_dropout=0.5 không thay đổi gì ở chế độ huấn luyện (train): hãy áp dụng nó lên x trước lora_A.",
    "in eval mode dropout must be off.": "ở chế độ đánh giá (eval), dropout phải tắt.",
    "add a `{method}()` method.": "hãy thêm phương thức `{method}()`.",
    "after merge() the base weight should be W0 + (lora_alpha / r) · B @ A.":
        "sau merge(), trọng số gốc phải là W0 + (lora_alpha / r) · B @ A.",
    "merge() changed the bias; only the weight takes ΔW.": "merge() đã thay đổi bias; chỉ trọng số mới nhận ΔW.",
    "after merge() the update is counted twice: once in the merged weight and again by the LoRA path. Skip the "
    "LoRA path while merged.":
        "sau merge(), phần cập nhật bị tính hai lần: một lần trong trọng số đã gộp và một lần nữa qua nhánh LoRA. "
        "Khi đã gộp, hãy bỏ qua nhánh LoRA.",
    "merge() changed the layer's output; it should not.": "merge() làm thay đổi đầu ra của lớp; lẽ ra không được như vậy.",
    "unmerge() should restore the original weight W0.": "unmerge() phải khôi phục trọng số ban đầu W0.",
    "after unmerge() the output should be as before merge().": "sau unmerge(), đầu ra phải giống như trước merge().",
    "Llama-2-7B, q_proj and v_proj, r=8": "Llama-2-7B, q_proj và v_proj, r=8",
    "GPT-3 175B, Wq and Wv, r=1": "GPT-3 175B, Wq và Wv, r=1",
    "GPT-3 175B, Wq and Wv, r=8": "GPT-3 175B, Wq và Wv, r=8",
    "Llama-2-7B, all seven projections, r=64": "Llama-2-7B, cả bảy phép chiếu, r=64",
    "one 3 × 5 layer, r=2": "một lớp 3 × 5, r=2",
    "{what}: {got:,} is the size of the full matrices; LoRA trains B (out × r) and A (r × in).":
        "{what}: {got:,} là kích thước của các ma trận đầy đủ; LoRA chỉ huấn luyện B (out × r) và A (r × in).",
    "{what}: {got:,} counts only one of the two factors; add A (r × in) and B (out × r).":
        "{what}: {got:,} mới chỉ đếm một trong hai thừa số; hãy đếm cả A (r × in) và B (out × r).",
    "too many": "quá nhiều",
    "too few": "quá ít",
    "{what}: you counted {got:,}, {more}: count A (r × in) and B (out × r) of every layer in `shapes`.":
        "{what}: bạn đếm được {got:,}, {more}: hãy đếm A (r × in) và B (out × r) của mọi lớp trong `shapes`.",
    "{llama:,} for Llama-2-7B (PEFT's printout) and {small:.1f}M / {large:.1f}M for GPT-3 (the LoRA paper's) — "
    "from shapes alone.":
        "{llama:,} cho Llama-2-7B (đúng như PEFT in ra) và {small:.1f}M / {large:.1f}M cho GPT-3 (đúng như bài báo "
        "LoRA) — chỉ từ kích thước các lớp.",
    "lora_alpha={alpha}, r={r} → {new_r}: you returned {got:.4g}; lora_alpha is a positive number.":
        "lora_alpha={alpha}, r={r} → {new_r}: bạn trả về {got:.4g}; lora_alpha phải là một số dương.",
    "keeping lora_alpha={alpha} while r goes {r} → {new_r} changes the scaling {rule} from {before:.4g} to "
    "{after:.4g}.":
        "giữ nguyên lora_alpha={alpha} khi r đổi {r} → {new_r} làm hệ số tỉ lệ {rule} đổi từ {before:.4g} thành "
        "{after:.4g}.",
    " with rsLoRA": " với rsLoRA",
    "lora_alpha={alpha}, r={r} → {new_r}{method}: you returned {got:.4g}, so the scaling {rule} becomes "
    "{after:.4g} instead of staying {before:.4g}.":
        "lora_alpha={alpha}, r={r} → {new_r}{method}: bạn trả về {got:.4g}, nên hệ số tỉ lệ {rule} thành "
        "{after:.4g} thay vì giữ nguyên {before:.4g}.",
    "the scaling α/r (or α/√r with rsLoRA) stays put when r changes only if α moves with it.":
        "khi r thay đổi, hệ số tỉ lệ α/r (hoặc α/√r với rsLoRA) chỉ giữ nguyên nếu α thay đổi theo.",
    "the update is multiplied by {scale:g}: that is lora_alpha / r with its fraction dropped (integer division // "
    "or int(): {alpha:g} // {r} = {floor:g}); with lora_alpha < r it gives 0 and switches LoRA off. Keep the "
    "fraction: divide with /.":
        "phần cập nhật được nhân với {scale:g}: đó là lora_alpha / r đã bị bỏ phần lẻ (phép chia lấy phần nguyên // "
        "hoặc int(): {alpha:g} // {r} = {floor:g}); khi lora_alpha < r, kết quả là 0 và LoRA bị tắt hẳn. Hãy giữ "
        "phần lẻ: chia bằng /.",
    "the update is multiplied by {scale:.4g} = r / lora_alpha: the scaling is upside down; a larger lora_alpha "
    "must make the update larger.":
        "phần cập nhật được nhân với {scale:.4g} = r / lora_alpha: hệ số tỉ lệ bị lộn ngược; lora_alpha lớn hơn "
        "phải làm phần cập nhật lớn hơn.",
    "the update is multiplied by {scale:.4g} = lora_alpha / √r: that is rsLoRA's scaling (use_rslora=True); "
    "plain LoRA divides by r itself.":
        "phần cập nhật được nhân với {scale:.4g} = lora_alpha / √r: đó là hệ số tỉ lệ của rsLoRA "
        "(use_rslora=True); LoRA thông thường chia cho chính r.",
    "your dropout zeroes inputs but does not scale the kept ones by 1 / (1 − p): the update is then smaller in "
    "training than in eval. nn.Dropout does the scaling for you.":
        "dropout của bạn đặt một số đầu vào về 0 nhưng không nhân các giá trị được giữ lại với 1 / (1 − p): khi đó "
        "phần cập nhật lúc huấn luyện nhỏ hơn lúc đánh giá. nn.Dropout tự làm phép nhân này cho bạn.",
    "your dropout acts on the LoRA path's output, after lora_B. PEFT's LoRA layer drops the input features before "
    "lora_A: lora_B(lora_A(dropout(x))).":
        "dropout của bạn tác động lên đầu ra của nhánh LoRA, sau lora_B. Lớp LoRA của PEFT bỏ bớt các đặc trưng "
        "đầu vào trước lora_A: lora_B(lora_A(dropout(x))).",
    "your dropout sits between lora_A and lora_B, on the r values A computes. PEFT's LoRA layer drops the input "
    "features before lora_A instead: lora_B(lora_A(dropout(x))). Dropping one of A's r outputs removes a whole "
    "direction of the update at once.":
        "dropout của bạn nằm giữa lora_A và lora_B, trên r giá trị mà A tính ra. Lớp LoRA của PEFT thì bỏ bớt các "
        "đặc trưng đầu vào trước lora_A: lora_B(lora_A(dropout(x))). Bỏ một trong r đầu ra của A là xóa cả một "
        "hướng của phần cập nhật cùng một lúc.",
    "shapes, zero B, α/r scaling, dropout on the LoRA path's input, frozen base, merge and unmerge: all as in "
    "PEFT's LoRA layer.":
        "kích thước, B bằng 0, hệ số tỉ lệ α/r, dropout trên đầu vào của nhánh LoRA, lớp gốc đóng băng, gộp và "
        "tách: tất cả đều như lớp LoRA của PEFT.",
    "{what}: {got:,} treats every layer as square (2·r·d); A is (r × in) and B is (out × r), and in_features and "
    "out_features differ for some of these layers.":
        "{what}: {got:,} coi mọi lớp là ma trận vuông (2·r·d); A là (r × in) và B là (out × r), mà in_features và "
        "out_features khác nhau ở một số lớp trong đây.",
    "lora_alpha={alpha}, r={r} → {new_r} with rsLoRA: you returned {got:.4g}, which keeps α/r. rsLoRA scales by "
    "lora_alpha / sqrt(r), so lora_alpha moves with √r, not with r.":
        "lora_alpha={alpha}, r={r} → {new_r} với rsLoRA: bạn trả về {got:.4g}, tức là giữ nguyên α/r. Hệ số tỉ lệ "
        "của rsLoRA là lora_alpha / sqrt(r), nên lora_alpha phải thay đổi theo √r, không phải theo r.",

    # ------------------------------------------------------------------------- 03 LoRA vs PEFT
    "return a peft.LoraConfig, got {kind}.": "hãy trả về một peft.LoraConfig; bạn trả về {kind}.",
    "the exercise asks for the rank r = 8; your config has r={got!r}.":
        "đề bài yêu cầu hạng r = 8; cấu hình của bạn có r={got!r}.",
    "the exercise asks for α (lora_alpha) = 32; your config has lora_alpha={got!r}.":
        "đề bài yêu cầu α (lora_alpha) = 32; cấu hình của bạn có lora_alpha={got!r}.",
    "the exercise asks for the dropout on the LoRA path (lora_dropout) = 0.1; your config has "
    "lora_dropout={got!r}.":
        "đề bài yêu cầu tỉ lệ dropout trên nhánh LoRA (lora_dropout) = 0.1; cấu hình của bạn có lora_dropout={got!r}.",
    "PEFT refused the config: target_modules {targets} match nothing in GPT-2. GPT-2 does not name its layers as "
    "Llama does: print(model) and see what it calls its attention projection, one fused Conv1D for query, key and "
    "value.":
        "PEFT từ chối cấu hình: target_modules {targets} không khớp với lớp nào trong GPT-2. GPT-2 không đặt tên các "
        "lớp như Llama: hãy print(model) và xem nó gọi phép chiếu attention của mình là gì — một Conv1D gộp chung cho "
        "query, key và value.",
    "task_type={task!r}: PEFT wrapped GPT-2 as a {kind}, not as a causal language model (whose wrapper generates "
    "text and shifts the labels). Set the peft.TaskType that says what GPT-2 is.":
        "task_type={task!r}: PEFT bọc GPT-2 thành một {kind}, không phải một mô hình ngôn ngữ nhân quả (causal "
        "language model — lớp bọc đó sinh văn bản và dịch nhãn đi một vị trí). Hãy đặt peft.TaskType nói đúng GPT-2 "
        "là loại mô hình gì.",
    "LoRA landed on {landed} but not on the attention: print(model) and look for the attention block's "
    "projection, one fused Conv1D for query, key and value.":
        "LoRA được gắn vào {landed} nhưng không vào attention: hãy print(model) và tìm phép chiếu của khối "
        "attention, một Conv1D gộp chung cho query, key và value.",
    "GPT-2's Conv1D stores its weight as (in, out), transposed from nn.Linear's (out, in); PEFT notices and "
    "corrects your config with a warning. Say it yourself: LoraConfig has a flag for a weight stored that way.":
        "Conv1D của GPT-2 lưu trọng số dạng (in, out), chuyển vị so với (out, in) của nn.Linear; PEFT nhận ra và tự "
        "sửa cấu hình của bạn kèm một cảnh báo. Hãy tự khai báo điều đó: LoraConfig có một cờ dành cho trọng số được "
        "lưu theo cách này.",
    "at init the output changed: keep init_lora_weights at its default so that B starts at zero.":
        "lúc khởi tạo, đầu ra đã thay đổi: hãy để init_lora_weights ở giá trị mặc định để B bắt đầu bằng 0.",
    "LoRA on {name}: one B of {rows} rows adapts Wq, Wk and Wv at once ({trainable:,} trainable on this tiny "
    "GPT-2).":
        "LoRA trên {name}: một ma trận B gồm {rows} hàng điều chỉnh cùng lúc Wq, Wk và Wv ({trainable:,} tham số "
        "huấn luyện được trên GPT-2 tí hon này).",
    "return a list of module names (strings), got {kind}.":
        "hãy trả về một danh sách tên mô-đun (chuỗi); bạn trả về {kind}.",
    "return the last part of each name (e.g. 'q_proj'), as target_modules takes them, not full paths such as "
    "{path!r}.":
        "hãy trả về phần cuối của mỗi tên (ví dụ 'q_proj'), đúng như target_modules nhận, chứ không phải đường dẫn "
        "đầy đủ như {path!r}.",
    "{arch}: {head!r} is the output head, mapping to the vocabulary; QLoRA and PEFT's 'all-linear' leave it out "
    "(find it with model.get_output_embeddings()).":
        "{arch}: {head!r} là lớp đầu ra (output head), ánh xạ sang bộ từ vựng; QLoRA và 'all-linear' của PEFT đều "
        "bỏ nó ra (tìm nó bằng model.get_output_embeddings()).",
    "{arch}: {extra} are not linear layers of this model; walk model.named_modules() and keep the nn.Linear ones "
    "instead of listing names by hand.":
        "{arch}: {extra} không phải là lớp tuyến tính của mô hình này; hãy duyệt model.named_modules() và giữ lại "
        "các nn.Linear thay vì tự liệt kê tên bằng tay.",
    "{arch}: you missed {count} of the model's linear layer names; walk model.named_modules() and keep every "
    "nn.Linear but the output head.":
        "{arch}: bạn còn thiếu {count} tên lớp tuyến tính của mô hình; hãy duyệt model.named_modules() và giữ mọi "
        "nn.Linear trừ lớp đầu ra.",
    "the same layers as target_modules='all-linear' — for Llama the seven projections, for other architectures "
    "whatever their linear layers are called.":
        "đúng các lớp mà target_modules='all-linear' chọn — với Llama là bảy phép chiếu, với các kiến trúc khác là "
        "các lớp tuyến tính của chúng, dù được đặt tên thế nào.",
    "the PEFT model was modified ({name!r}); copy from it, into ours.":
        "mô hình PEFT đã bị thay đổi ({name!r}); hãy sao chép từ nó sang mô hình của lora_lab, không phải ngược lại.",
    "{stale} of {total} LoRA layers were not filled (e.g. {name!r}). Print a few names of "
    "peft_model.named_parameters() next to our_model's: PEFT's carry a prefix and an adapter name that ours do "
    "not.":
        "{stale} trên {total} lớp LoRA chưa được điền (ví dụ {name!r}). Hãy in vài tên từ "
        "peft_model.named_parameters() cạnh tên của our_model: tên của PEFT có thêm một tiền tố và tên adapter mà "
        "tên của lora_lab không có.",
    "with targets {targets!r} the logits differ by {diff:.2e}: some A and B went to the wrong layer, or A and B "
    "were swapped.":
        "với targets {targets!r}, logits lệch nhau {diff:.2e}: có A và B bị chép nhầm lớp, hoặc A và B bị đổi chỗ.",
    "the two models now give identical logits: same adapter, two libraries.":
        "giờ hai mô hình cho logits giống hệt nhau: cùng một adapter, hai thư viện.",
    "PEFT refused target_modules={targets!r}, a name GPT-2 has: given as a string, target_modules is a regular "
    "expression that must match a module's FULL name (transformer.h.0.…), while a list matches the last part of "
    "each name. Put the name in a list.":
        "PEFT từ chối target_modules={targets!r}, dù GPT-2 có tên này: khi là một chuỗi, target_modules là một biểu "
        "thức chính quy (regular expression) phải khớp với TÊN ĐẦY ĐỦ của mô-đun (transformer.h.0.…), còn một danh "
        "sách thì khớp với phần cuối của mỗi tên. Hãy đặt tên đó vào một danh sách.",
    "LoRA also landed on {extra}: {trainable:,} trainable parameters where the attention's query/key/value "
    "projection alone gives {asked:,}. In GPT-2, c_proj names two layers (the attention's output projection and "
    "the MLP's second layer) and c_fc is the MLP's first. The tutorial adapted the query and value projections "
    "only; GPT-2 keeps them in one fused Conv1D: target that one alone.":
        "LoRA còn được gắn cả vào {extra}: {trainable:,} tham số huấn luyện được, trong khi riêng phép chiếu "
        "query/key/value của attention chỉ cho {asked:,}. Trong GPT-2, tên c_proj dùng cho hai lớp (phép chiếu đầu ra "
        "của attention và lớp thứ hai của MLP), còn c_fc là lớp thứ nhất của MLP. Bài hướng dẫn chỉ gắn LoRA vào các "
        "phép chiếu query và value; GPT-2 gộp chúng trong một Conv1D duy nhất: chỉ nhắm vào lớp đó thôi.",
    "a Llama whose output head is registered before its layers":
        "một mô hình Llama có lớp đầu ra được đăng ký trước các lớp khác",
    "{arch}: {head!r} is in your list, but it is the output head. In this model named_modules() lists the head "
    "before the layers, so the last nn.Linear found is a down_proj: find the head by what it is, "
    "model.get_output_embeddings(), not by its place or its name.":
        "{arch}: {head!r} có trong danh sách của bạn, nhưng đó là lớp đầu ra. Ở mô hình này, named_modules() liệt kê "
        "lớp đầu ra trước các lớp khác, nên nn.Linear cuối cùng tìm được là một down_proj: hãy tìm lớp đầu ra theo "
        "bản chất của nó, model.get_output_embeddings(), chứ không theo vị trí hay tên của nó.",
    "In both libraries lora_A.weight is (r, in_features) and lora_B.weight is (out_features, r), here with r = 4: "
    "a size error in copy_ means an A went into a B or the reverse (or one layer's tensor into another layer). "
    "Pair each parameter with the one of the same layer and the same letter.":
        "Trong cả hai thư viện, lora_A.weight có kích thước (r, in_features) và lora_B.weight có kích thước "
        "(out_features, r), ở đây r = 4: lỗi kích thước trong copy_ nghĩa là một A bị chép vào một B hoặc ngược lại "
        "(hoặc tensor của lớp này bị chép vào lớp khác). Hãy ghép mỗi tham số với tham số cùng lớp và cùng chữ cái.",
    "PEFT's parameter names carry a prefix and an adapter name that ours do not: print a few names of "
    "peft_model.named_parameters() next to our_model's.":
        "Tên tham số của PEFT có thêm một tiền tố và tên adapter mà tên của lora_lab không có: hãy in vài tên từ "
        "peft_model.named_parameters() cạnh tên của our_model.",

    # ------------------------------------------------------------------------- 04 NF4 from scratch
    "{n} codes went in, {out} came out: drop the padding code of an odd count.":
        "đưa vào {n} mã, nhận lại {out} mã: khi số mã lẻ, hãy bỏ mã đệm ở cuối.",
    "{n} codes went in, {out} came out.": "đưa vào {n} mã, nhận lại {out} mã.",
    "the two nibbles are swapped: the first code of a byte sits in its HIGH nibble (the top 4 bits), the second "
    "in the low one.":
        "hai nửa byte bị đổi chỗ: mã thứ nhất của một byte nằm ở nửa CAO (4 bit trên), mã thứ hai ở nửa thấp.",
    "{wrong} of {n} codes came back wrong, the first at position {at} (byte {byte}, {nibble} nibble).":
        "{wrong} trên {n} mã bị sai, mã sai đầu tiên ở vị trí {at} (byte {byte}, nửa {nibble}).",
    "high": "cao",
    "low": "thấp",
    "the codes don't reproduce the quantized matrix.": "các mã không tái tạo lại được ma trận đã lượng tử hóa.",
    "bytes → codes → table[code] × absmax: the whole dequantization path, by hand.":
        "byte → mã → table[code] × absmax: toàn bộ đường giải lượng tử hóa, do chính tay bạn viết.",
    "{bits} bits give {size} values, you returned {count}.": "{bits} bit cho {size} giá trị, bạn trả về {count}.",
    "normal_float_codebook({bits}) should be sorted, smallest first.":
        "normal_float_codebook({bits}) phải được sắp xếp tăng dần, nhỏ nhất đứng đầu.",
    "normal_float_codebook({bits}) has no exact 0.0: add it (zeros must stay zeros).":
        "normal_float_codebook({bits}) không có giá trị 0.0 chính xác: hãy thêm vào (số 0 phải giữ nguyên là 0).",
    "scale the values into [-1, 1]: got {low:.4f} … {high:.4f}.":
        "hãy co giãn các giá trị về [-1, 1]: của bạn đang là {low:.4f} … {high:.4f}.",
    "{bits} bits: {npos} positive and {nneg} negative values; with zero taking one code, NormalFloat keeps {half} "
    "positive and {less} negative ones.":
        "{bits} bit: {npos} giá trị dương và {nneg} giá trị âm; vì số 0 chiếm một mã, NormalFloat giữ {half} giá trị "
        "dương và {less} giá trị âm.",
    "positive": "dương",
    "negative": "âm",
    "normal_float_codebook({bits}): {count} of the {size} values are not NormalFloat's, the first at index {at} "
    "(a {side} one). Check the offset (the probability of the outermost value), that each side has its own evenly "
    "spaced probabilities from the offset to 0.5, and that all values are divided by the largest one.":
        "normal_float_codebook({bits}): {count} trên {size} giá trị không phải của NormalFloat, giá trị đầu tiên ở "
        "chỉ số {at} (một giá trị {side}). Hãy kiểm tra offset (xác suất của giá trị ngoài cùng), rằng mỗi phía có "
        "dãy xác suất cách đều riêng, từ offset đến 0.5, và rằng mọi giá trị đều được chia cho giá trị lớn nhất.",
    "at 4 bits it is bitsandbytes' NF4 table; the same recipe gives NF2, NF3, NF5.":
        "ở 4 bit, đó chính là bảng mã NF4 của bitsandbytes; cùng công thức đó cho NF2, NF3, NF5.",
    "the block absmax is stored in fp32, 32 bits, not 16.":
        "absmax của mỗi khối được lưu ở fp32, tức 32 bit, không phải 16.",
    "almost: the 8-bit absmax codes need their own fp32 scale, one per 256 blocks, and each weight carries its "
    "share of it too.":
        "gần đúng rồi: các mã absmax 8-bit cần hệ số fp32 riêng của chúng, cứ 256 khối một hệ số, và mỗi trọng số "
        "cũng gánh một phần của nó.",
    "with double quantization each block's absmax is an 8-bit code, not 32-bit.":
        "với lượng tử hóa kép, absmax của mỗi khối là một mã 8-bit, không phải 32-bit.",
    "blocksize={blocksize}, double_quant={dq}: you said {got:.6g} bits, but that is not what the quantizer stores "
    "per weight. Count the 4-bit code, then each block constant divided among the weights it serves.":
        "blocksize={blocksize}, double_quant={dq}: bạn tính ra {got:.6g} bit, nhưng bộ lượng tử hóa không lưu chừng "
        "đó cho mỗi trọng số. Hãy đếm mã 4-bit, rồi đến từng hằng số của khối, chia đều cho các trọng số mà nó phục "
        "vụ.",
    "your figure for blocksize=64 with double quantization is off from the real bytes by more than 0.01 %.":
        "con số của bạn cho blocksize=64 với lượng tử hóa kép lệch khỏi số byte thật hơn 0.01 %.",
    "{plain:g} bits per weight without double quantization, {dq:.3f} with it, as the QLoRA paper counts and the "
    "bytes confirm.":
        "{plain:g} bit mỗi trọng số khi không lượng tử hóa kép, {dq:.3f} khi có, đúng như bài báo QLoRA tính và số "
        "byte thật xác nhận.",
    "your codes come out as all the high nibbles, then all the low ones: the two codes of a byte belong side by "
    "side, code 2i in byte i's high nibble and code 2i+1 in its low one. Interleave them (stack the two halves on a "
    "new last axis, then flatten) instead of concatenating.":
        "các mã của bạn ra theo thứ tự tất cả nửa cao trước, rồi tất cả nửa thấp: hai mã của một byte phải đứng "
        "cạnh nhau, mã 2i ở nửa cao của byte i và mã 2i+1 ở nửa thấp. Hãy xen kẽ chúng (xếp chồng hai nửa theo một "
        "trục mới ở cuối, rồi làm phẳng) thay vì nối chúng lại.",
    "{bits} bits give {size} values; yours has {count}, with 0.0 twice: each side's quantiles end at probability "
    "0.5, which is 0, so keep one zero for both sides.":
        "{bits} bit cho {size} giá trị; của bạn có {count}, với hai lần 0.0: dãy phân vị của mỗi phía đều kết thúc ở "
        "xác suất 0.5, tức giá trị 0, nên hãy giữ một số 0 chung cho cả hai phía.",
    "normal_float_codebook({bits}): your values are (nearly) evenly spaced, a grid like int4's. NormalFloat places "
    "them at quantiles of a normal distribution, the points that cut it into equal probabilities: they crowd near "
    "0, where most weights are, and spread out toward ±1, so each code is used about equally often.":
        "normal_float_codebook({bits}): các giá trị của bạn cách đều (hoặc gần như cách đều), một lưới giống của "
        "int4. NormalFloat đặt chúng tại các phân vị của phân phối chuẩn, những điểm chia phân phối thành các phần có "
        "xác suất bằng nhau: chúng dày đặc gần 0, nơi có nhiều trọng số nhất, và thưa dần về phía ±1, nên mỗi mã được "
        "dùng với tần suất gần như nhau.",

    # ------------------------------------------------------------------------- 05 QLoRA from scratch
    "qlora_forward's result": "kết quả của qlora_forward",
    "the output should have shape {want}, got {got}.": "đầu ra phải có kích thước {want}, nhưng lại là {got}.",
    "that is the 4-bit base alone: add the LoRA path lora_B(lora_A(x)) · scaling.":
        "đó mới chỉ là lớp gốc 4-bit: hãy cộng thêm nhánh LoRA lora_B(lora_A(x)) · scaling.",
    "the LoRA path must be multiplied by layer.scaling (α/r = {scaling:g}).":
        "nhánh LoRA phải được nhân với layer.scaling (α/r = {scaling:g}).",
    "the base layer has a bias: add layer.base_layer.bias.": "lớp gốc có bias: hãy cộng layer.base_layer.bias.",
    "the output differs from layer(x): dequantize the base weight (layer.base_layer.dequantize(), shape (out, "
    "in)) and mind which side of the matmul each weight goes; then add the bias and the scaled LoRA path.":
        "đầu ra khác với layer(x): hãy giải lượng tử hóa trọng số gốc (layer.base_layer.dequantize(), kích thước "
        "(out, in)) và để ý mỗi trọng số nằm ở phía nào của phép nhân ma trận; sau đó cộng bias và nhánh LoRA đã "
        "nhân hệ số tỉ lệ.",
    "A QLoRA layer computes dequant(W)·x + b + (α/r)·B·A·x: 4-bit storage, ordinary matmuls.":
        "một lớp QLoRA tính dequant(W)·x + b + (α/r)·B·A·x: lưu trữ 4-bit, phép nhân ma trận bình thường.",
    "return a number of bytes, got {kind}.": "hãy trả về một số byte; bạn trả về {kind}.",
    "nf4_bytes({n:,}, {blocksize}, {dq}) = {got:,}: that counts the 4-bit codes only; every block also stores its "
    "absmax scale.":
        "nf4_bytes({n:,}, {blocksize}, {dq}) = {got:,}: đó mới chỉ đếm các mã 4-bit; mỗi khối còn lưu hệ số absmax "
        "của nó.",
    "nf4_bytes({n:,}, {blocksize}, {dq}) = {got:,}: count bytes (8 bits), not bits.":
        "nf4_bytes({n:,}, {blocksize}, {dq}) = {got:,}: hãy đếm byte (8 bit), không phải bit.",
    "more than": "nhiều hơn",
    "less than": "ít hơn",
    "nf4_bytes({n:,}, blocksize={blocksize}, double_quant={dq}) = {got:,} is {more} what the quantizer stores: two "
    "codes per byte, then per block a 4-byte fp32 absmax, or with double quantization a 1-byte code plus one fp32 "
    "scale per 256 blocks and one fp32 offset. Mind the rounding up of partial bytes and blocks.":
        "nf4_bytes({n:,}, blocksize={blocksize}, double_quant={dq}) = {got:,}, {more} số byte bộ lượng tử hóa lưu: "
        "hai mã mỗi byte, rồi mỗi khối một absmax fp32 4 byte, hoặc với lượng tử hóa kép thì một mã 1 byte, cộng "
        "một hệ số fp32 cho mỗi 256 khối và một offset fp32. Hãy để ý việc làm tròn lên với byte và khối chưa đầy.",
    "{plain:g} bits per weight at blocksize 64, about {dq:.3f} with double quantization (QLoRA §3).":
        "{plain:g} bit mỗi trọng số với blocksize 64, khoảng {dq:.3f} với lượng tử hóa kép (QLoRA §3).",
    "layer.base_layer.weight holds the packed 4-bit codes, {count:,} bytes of uint8 with two codes each, not the "
    "weight: layer.base_layer.dequantize() rebuilds the (out, in) float weight.":
        "layer.base_layer.weight chứa các mã 4-bit đã đóng gói, {count:,} byte uint8, mỗi byte hai mã, chứ không "
        "phải trọng số: layer.base_layer.dequantize() mới dựng lại trọng số số thực (out, in).",
    "you multiplied the base layer's output by the scaling too: α/r weighs the LoRA path only, (α/r)·B·A·x; the "
    "frozen base computes as it always did.":
        "bạn đã nhân cả đầu ra của lớp gốc với hệ số tỉ lệ: α/r chỉ áp dụng cho nhánh LoRA, (α/r)·B·A·x; lớp gốc "
        "đóng băng vẫn tính như mọi khi.",
    "nf4_bytes({n:,}, {blocksize}, double_quant=True) = {got:,}: that is the size without double quantization, a "
    "4-byte absmax per block. Double quantization stores each block's absmax as a 1-byte code, plus one fp32 scale "
    "per 256 blocks and one fp32 offset.":
        "nf4_bytes({n:,}, {blocksize}, double_quant=True) = {got:,}: đó là kích thước khi không lượng tử hóa kép, "
        "mỗi khối một absmax 4 byte. Lượng tử hóa kép lưu absmax của mỗi khối thành một mã 1 byte, cộng thêm một hệ "
        "số fp32 cho mỗi 256 khối và một offset fp32.",
    "nf4_bytes({n:,}, {blocksize}, double_quant=True) = {got:,}: almost — the fp32 offset is missing (4 bytes, one "
    "per tensor: the 1-byte absmax codes are stored with their mean taken out).":
        "nf4_bytes({n:,}, {blocksize}, double_quant=True) = {got:,}: gần đúng rồi — còn thiếu offset fp32 (4 byte, "
        "mỗi tensor một offset: các mã absmax 1 byte được lưu sau khi đã trừ đi giá trị trung bình của chúng).",

    # ------------------------------------------------------------------------- 06 the QLoRA fine-tune
    "padding with the EOS token hides every EOS where padding is masked, so the model never learns to stop; pick "
    "another token.":
        "đệm bằng token EOS sẽ che luôn mọi EOS ở những chỗ phần đệm bị che (mask), nên mô hình không bao giờ học "
        "được cách dừng; hãy chọn token khác.",
    "return the token itself, a string as the tokenizer's *_token attributes hold them; got {kind}.":
        "hãy trả về chính token, dạng chuỗi như các thuộc tính *_token của bộ tách từ; bạn trả về {kind}.",
    "this tokenizer has its own pad token, {own!r}, and you returned {got!r}: keep the pad token the tokenizer "
    "was made with when it is not EOS.":
        "bộ tách từ này có token đệm riêng, {own!r}, nhưng bạn trả về {got!r}: khi token đệm sẵn có không phải EOS, "
        "hãy giữ nguyên nó.",
    "this tokenizer has no pad token (Llama-2's case)": "bộ tách từ này không có token đệm (trường hợp của Llama-2)",
    "this tokenizer pads with EOS (the classic recipe)": "bộ tách từ này đệm bằng EOS (công thức quen thuộc)",
    "{situation}, and you returned BOS {got!r}: every row starts with it, and the model must see it there; pick "
    "another token.":
        "{situation}, và bạn trả về BOS {got!r}: mọi dòng đều bắt đầu bằng nó, và mô hình phải thấy nó ở đó; hãy "
        "chọn token khác.",
    "{situation}, and you returned {got!r}, which it does not have: a new token needs a new embedding row. Pick "
    "one of the tokenizer's own special tokens that the model never has to predict.":
        "{situation}, và bạn trả về {got!r}, một token mà bộ tách từ không có: thêm token mới nghĩa là thêm một hàng "
        "embedding mới. Hãy chọn một trong các token đặc biệt sẵn có của bộ tách từ mà mô hình không bao giờ phải "
        "dự đoán.",
    "Pad with a token the model never has to predict: the tokenizer's own pad token if it is not EOS, else another "
    "special token it already has; never EOS.":
        "đệm bằng một token mà mô hình không bao giờ phải dự đoán: token đệm sẵn có của bộ tách từ nếu nó không phải "
        "EOS, nếu không thì một token đặc biệt khác mà bộ tách từ đã có; không bao giờ dùng EOS.",
    "sampling_probs' result": "kết quả của sampling_probs",
    "return one probability per token, shape {want}; got {got}.":
        "hãy trả về mỗi token một xác suất, kích thước {want}; của bạn là {got}.",
    "with top_k={k} your probabilities sum to {total:.3f}: after dropping all but the k likeliest tokens, "
    "renormalise (a softmax over the kept logits, the others set to -inf), so that the kept ones sum to 1.":
        "với top_k={k}, tổng các xác suất của bạn là {total:.3f}: sau khi bỏ mọi token trừ k token có khả năng cao "
        "nhất, hãy chuẩn hóa lại (softmax trên các logits được giữ, các logits còn lại đặt bằng -inf), để tổng các "
        "xác suất được giữ bằng 1.",
    "probabilities sum to 1; yours sum to {total:.4f}.": "tổng các xác suất phải bằng 1; của bạn là {total:.4f}.",
    "divide the logits by the temperature, don't multiply: T < 1 must sharpen.":
        "hãy chia logits cho nhiệt độ, đừng nhân: T < 1 phải làm phân phối nhọn hơn.",
    "at temperature {t} the result is the T = 1 distribution: divide the logits by T.":
        "ở nhiệt độ {t}, kết quả lại là phân phối của T = 1: hãy chia logits cho T.",
    "top_k={k} keeps the {k} likeliest tokens and gives every other token probability 0; yours gives {kept} "
    "tokens a non-zero probability.":
        "top_k={k} giữ {k} token có khả năng cao nhất và cho mọi token khác xác suất 0; của bạn cho {kept} token xác "
        "suất khác 0.",
    "at T={t}, top_k={k} your probabilities are not the ones generate() samples from: scale the logits by the "
    "temperature, keep the k largest, then softmax.":
        "với T={t}, top_k={k}, các xác suất của bạn không phải phân phối mà generate() lấy mẫu: hãy co giãn logits "
        "theo nhiệt độ, giữ k logits lớn nhất, rồi mới softmax.",
    "T reshapes the distribution and top_k cuts its tail, exactly as transformers' TemperatureLogitsWarper and "
    "TopKLogitsWarper do before generate() samples.":
        "T định hình lại phân phối và top_k cắt bỏ phần đuôi của nó, đúng như TemperatureLogitsWarper và "
        "TopKLogitsWarper của transformers làm trước khi generate() lấy mẫu.",
    "that is 8 bytes per parameter, two fp32 tensors; training keeps four for each LoRA weight: the weight, its "
    "gradient, and AdamW's two moments m and v.":
        "đó là 8 byte mỗi tham số, hai tensor fp32; quá trình huấn luyện giữ bốn tensor cho mỗi trọng số LoRA: chính "
        "trọng số, gradient của nó, và hai moment m và v của AdamW.",
    "training_bytes({n:,}, {optim!r}) = {got:,}, {each:.4g} bytes per trainable parameter: not what training with "
    "{optim!r} keeps. Add up the fp32 weight, its gradient, and the optimizer's state per weight.":
        "training_bytes({n:,}, {optim!r}) = {got:,}, tức {each:.4g} byte mỗi tham số huấn luyện được: không khớp với "
        "những gì quá trình huấn luyện với {optim!r} phải giữ. Hãy cộng trọng số fp32, gradient của nó, và trạng "
        "thái bộ tối ưu cho mỗi trọng số.",
    "{each:g} bytes per trainable parameter with AdamW: the 7B recipe's {n:,} LoRA weights take {gib:.2f} GiB, on "
    "top of the 4-bit base.":
        "{each:g} byte mỗi tham số huấn luyện được với AdamW: {n:,} trọng số LoRA của công thức 7B chiếm {gib:.2f} "
        "GiB, cộng thêm vào mô hình gốc 4-bit.",
    "that is 12 bytes per parameter. Either three fp32 tensors, one short of the four training keeps for each LoRA "
    "weight (the weight, its gradient, and AdamW's two moments m and v; most often the gradient is forgotten), or "
    "all four with the weight and its gradient in fp16, 2 + 2 + 8. The exercise keeps them in fp32, as the kit "
    "does: the 4-bit base computes in 16 bits, but fp16 trainable weights make mixed-precision training fail "
    "(\"Attempting to unscale FP16 gradients\"), and fp16's 10-bit mantissa rounds away updates far smaller than "
    "the weight.":
        "đó là 12 byte mỗi tham số. Hoặc là ba tensor fp32, thiếu một trong bốn tensor mà quá trình huấn luyện giữ "
        "cho mỗi trọng số LoRA (chính trọng số, gradient của nó, và hai moment m và v của AdamW; hay bị quên nhất là "
        "gradient), hoặc là đủ cả bốn nhưng trọng số và gradient ở fp16, 2 + 2 + 8. Bài tập giữ chúng ở fp32, như bộ "
        "kit: mô hình gốc 4-bit tính ở 16 bit, nhưng trọng số huấn luyện được ở fp16 làm việc huấn luyện với độ chính "
        "xác hỗn hợp báo lỗi (\"Attempting to unscale FP16 gradients\"), và phần định trị 10 bit của fp16 làm tròn "
        "mất những cập nhật nhỏ hơn nhiều so với trọng số.",
    "training_bytes({n:,}, 'adamw_8bit') = {got:,} counts AdamW's two moments in fp32; the 8-bit optimizer stores "
    "each moment in 1 byte (with a scale per block, negligible).":
        "training_bytes({n:,}, 'adamw_8bit') = {got:,} tính hai moment của AdamW ở fp32; bộ tối ưu 8-bit lưu mỗi "
        "moment trong 1 byte (kèm một hệ số cho mỗi khối, không đáng kể).",
    "training_bytes({n:,}, 'sgd') = {got:,}: plain SGD keeps no state of its own, only the weight and its gradient "
    "(a momentum buffer comes only with momentum > 0).":
        "training_bytes({n:,}, 'sgd') = {got:,}: SGD thuần không giữ trạng thái riêng nào, chỉ có trọng số và "
        "gradient của nó (bộ đệm momentum chỉ có khi momentum > 0).",

    # ------------------------------------------------------------------------- 07 beyond LoRA
    "pool_groups(x of shape {shape}, {gs}) should have shape {want} (one value per group, on the last axis), got "
    "{got}.":
        "pool_groups(x có kích thước {shape}, {gs}) phải có kích thước {want} (mỗi nhóm một giá trị, trên trục "
        "cuối), nhưng lại là {got}.",
    "for in_features={fin} and group_size={gs} you returned {gs} values per row: that is one per position inside "
    "a group. QA-LoRA keeps one per group, in_features / group_size = {groups}.":
        "với in_features={fin} và group_size={gs}, bạn trả về {gs} giá trị mỗi hàng: tức là mỗi vị trí trong nhóm "
        "một giá trị. QA-LoRA giữ mỗi nhóm một giá trị, in_features / group_size = {groups}.",
    "your groups take every G-th feature (x.view(..., group_size, G)); a quantization group is group_size "
    "NEIGHBOURING columns, side by side along the last axis.":
        "các nhóm của bạn lấy cứ mỗi đặc trưng thứ G (x.view(..., group_size, G)); một nhóm lượng tử hóa là "
        "group_size cột KỀ NHAU, nằm cạnh nhau trên trục cuối.",
    "that is the sum of each group ({gs} × the mean); average it: divide by group_size.":
        "đó là tổng của mỗi nhóm ({gs} × trung bình); hãy lấy trung bình: chia cho group_size.",
    "some group means are wrong: average each block of group_size neighbouring features along the last axis.":
        "một số giá trị trung bình nhóm bị sai: hãy lấy trung bình từng khối group_size đặc trưng kề nhau trên trục "
        "cuối.",
    "one number per group: A then has in_features / group_size columns, so B·A is the same for every column of a "
    "group — which is what lets the merge go into the zero points.":
        "mỗi nhóm một số: khi đó A có in_features / group_size cột, nên B·A như nhau với mọi cột trong một nhóm — "
        "chính điều này cho phép gộp vào các điểm 0 (zero point).",
    "return the pair (new_scales, new_zeros).": "hãy trả về cặp (new_scales, new_zeros).",
    "scales and zeros are (out, G) = {shape}; got {got_scales} and {got_zeros}.":
        "scales và zeros có kích thước (out, G) = {shape}; của bạn là {got_scales} và {got_zeros}.",
    "you changed the scales. A scale multiplies (q − zero), so changing it moves each weight in proportion to its "
    "code q — not by the same ΔW across the group. A shift shared by the whole group belongs in the zero point; "
    "leave the scales as they are.":
        "bạn đã thay đổi scales. Một hệ số scale nhân với (q − zero), nên thay đổi nó sẽ dịch mỗi trọng số theo tỉ "
        "lệ với mã q của nó — chứ không dịch cùng một ΔW cho cả nhóm. Một độ dịch chung cho cả nhóm thuộc về điểm 0 "
        "(zero point); hãy giữ nguyên scales.",
    "wrong sign: W = scale·(q − zero), so raising the weights means LOWERING the zero point.":
        "sai dấu: W = scale·(q − zero), nên muốn tăng trọng số thì phải HẠ điểm 0 xuống.",
    "zero points count in code steps, not in weight units: one step of the code is worth `scale` in the weight, "
    "so convert ΔW into code steps first.":
        "điểm 0 được đo bằng bước mã, không phải bằng đơn vị của trọng số: một bước mã ứng với `scale` trong trọng "
        "số, nên hãy đổi ΔW ra bước mã trước.",
    "scales·(codes − new_zeros) should equal the old weight plus ΔW; it is off by {diff:.2e}.":
        "scales·(codes − new_zeros) phải bằng trọng số cũ cộng ΔW; của bạn lệch {diff:.2e}.",
    "the codes never change: the merged model is still INT4, with one zero point moved per group. That is "
    "QA-LoRA's merge, exact up to the rounding of the stored zero points.":
        "các mã không bao giờ thay đổi: mô hình sau khi gộp vẫn là INT4, chỉ có điểm 0 (zero point) của mỗi nhóm "
        "dịch đi. Đó là cách QA-LoRA gộp, chính xác đến mức làm tròn của các điểm 0 được lưu.",
    "dora_magnitude's result": "kết quả của dora_magnitude",
    "you returned {fin} norms, one per INPUT column; DoRA (and PEFT) keeps one length per OUTPUT feature: one per "
    "row of the (out, in) weight, ({fout},) in all.":
        "bạn trả về {fin} chuẩn, mỗi cột ĐẦU VÀO một giá trị; DoRA (và PEFT) giữ mỗi đặc trưng ĐẦU RA một độ dài: "
        "mỗi hàng của trọng số (out, in) một giá trị, tổng cộng ({fout},).",
    "m should have shape (out_features,) = ({fout},), got {shape}.":
        "m phải có kích thước (out_features,) = ({fout},), nhưng lại là {shape}.",
    "those are the column norms: take the norm of each ROW of the (out, in) weight — one length per output "
    "feature.":
        "đó là chuẩn của các cột: hãy lấy chuẩn của từng HÀNG của trọng số (out, in) — mỗi đặc trưng đầu ra một độ "
        "dài.",
    "that is ‖W0‖ alone; the norm is of the adapted weight W0 + scaling·B·A.":
        "đó mới chỉ là ‖W0‖; cần lấy chuẩn của trọng số đã điều chỉnh W0 + scaling·B·A.",
    "ΔW is scaling·B·A: multiply B·A by the scaling before adding it.":
        "ΔW là scaling·B·A: hãy nhân B·A với hệ số tỉ lệ trước khi cộng.",
    "that is the squared norm: take the square root (torch.linalg.norm does).":
        "đó là bình phương của chuẩn: hãy lấy căn bậc hai (torch.linalg.norm làm việc đó).",
    "m differs from the row lengths of the adapted weight by up to {diff:.2e}.":
        "m lệch so với độ dài các hàng của trọng số đã điều chỉnh tới {diff:.2e}.",
    "m starts at the length of every output's weight row, so DoRA starts exactly where the base model is.":
        "m bắt đầu bằng độ dài hàng trọng số của mỗi đầu ra, nên DoRA bắt đầu đúng tại mô hình gốc.",
    "return the triple (lora_A, lora_B, residual).": "hãy trả về bộ ba (lora_A, lora_B, residual).",
    "lora_A and lora_B are swapped: A is (r, in_features), B is (out_features, r).":
        "lora_A và lora_B bị đổi chỗ: A có kích thước (r, in_features), B có kích thước (out_features, r).",
    "lora_A should be (r, in) = ({r}, {fin}), got {shape}.":
        "lora_A phải có kích thước (r, in) = ({r}, {fin}), nhưng lại là {shape}.",
    "lora_B should be (out, r) = ({fout}, {r}), got {shape}.":
        "lora_B phải có kích thước (out, r) = ({fout}, {r}), nhưng lại là {shape}.",
    "the residual has W0's shape {shape}.": "phần dư (residual) có cùng kích thước {shape} với W0.",
    "the residual is W0 itself: subtract the adapter's part, or the model counts the principal part twice.":
        "phần dư lại chính là W0: hãy trừ đi phần của adapter, nếu không mô hình sẽ tính phần chính hai lần.",
    "B·A holds the top-{r} part of W0, but the forward multiplies it by scaling = {scaling:g}: divide the singular "
    "values by the scaling before splitting them.":
        "B·A chứa phần top-{r} của W0, nhưng lượt forward lại nhân nó với scaling = {scaling:g}: hãy chia các giá trị "
        "suy biến cho hệ số tỉ lệ trước khi tách chúng cho A và B.",
    "scaling·B·A should be the best rank-{r} part of W0 (its {r} LARGEST singular values and vectors), but it is "
    "not.":
        "scaling·B·A phải là phần hạng {r} tốt nhất của W0 ({r} giá trị suy biến LỚN NHẤT và các vectơ của chúng), "
        "nhưng của bạn thì không.",
    "W_res + scaling·B·A should give back W0.": "W_res + scaling·B·A phải cho lại đúng W0.",
    "the product is right, but PEFT splits √(S_r / scaling) evenly between A and B, a square root on each side. "
    "Other splits train differently.":
        "tích đã đúng, nhưng PEFT chia √(S_r / scaling) đều cho A và B, mỗi bên một căn bậc hai. Những cách chia khác "
        "sẽ huấn luyện khác đi.",
    "the adapter starts with W0's principal part and the frozen base keeps the rest: the same model at init, but A "
    "and B now train the directions that matter most.":
        "adapter bắt đầu với phần chính của W0, còn lớp gốc đóng băng giữ phần còn lại: lúc khởi tạo mô hình vẫn như "
        "cũ, nhưng giờ A và B huấn luyện những hướng quan trọng nhất.",
    "that is G × the mean, with G = in_features / group_size = {groups} groups: the input PEFT's QA-LoRA layer "
    "feeds to A, G·x̄. pool_groups is the group mean x̄ itself; the layer multiplies by G afterwards "
    "(QALoRALinear.pool_scale).":
        "đó là G × giá trị trung bình, với G = in_features / group_size = {groups} nhóm: đầu vào mà lớp QA-LoRA của "
        "PEFT đưa vào A, G·x̄. pool_groups chính là giá trị trung bình của nhóm, x̄; lớp này nhân với G sau đó "
        "(QALoRALinear.pool_scale).",

    # ------------------------------------------------------------------------- 08 beyond one GPU (scaling.py)
    "return a whole number of bytes (an int), got {kind}.":
        "hãy trả về một số byte nguyên (int); bạn trả về {kind}.",
    "shape {shape} over {world} processes: you split the bytes evenly, but FSDP splits the first dimension into "
    "whole rows, ceil(rows / world_size) per process, so the last process holds fewer (or none).":
        "hình dạng {shape} chia cho {world} tiến trình: bạn chia đều số byte, nhưng FSDP cắt chiều thứ nhất thành những "
        "hàng nguyên vẹn, mỗi tiến trình ceil(rows / world_size) hàng, nên tiến trình cuối giữ ít hơn (hoặc không giữ "
        "hàng nào).",
    "shape {shape} over {world} processes: rows / world_size rounded down leaves rows that no process holds; FSDP "
    "gives the first processes ceil(rows / world_size) rows each and the last what remains.":
        "hình dạng {shape} chia cho {world} tiến trình: rows / world_size làm tròn xuống sẽ bỏ sót những hàng không "
        "tiến trình nào giữ; FSDP cho các tiến trình đầu mỗi tiến trình ceil(rows / world_size) hàng, và tiến trình "
        "cuối giữ phần còn lại.",
    "shape {shape}, {size} bytes per element, world size {world}, rank {rank}: you returned {got:,} bytes, which is "
    "not process {rank}'s share of the rows.":
        "hình dạng {shape}, {size} byte mỗi phần tử, {world} tiến trình, rank {rank}: bạn trả về {got:,} byte, không "
        "phải phần hàng của tiến trình {rank}.",
    "FSDP cuts every parameter along its first dimension: whole rows, ceil(rows / N) per process. When N divides "
    "the rows, every process holds exactly 1/N.":
        "FSDP cắt mọi tham số theo chiều thứ nhất của nó: những hàng nguyên vẹn, mỗi tiến trình ceil(rows / N) hàng. "
        "Khi N chia hết số hàng, mỗi tiến trình giữ đúng 1/N.",
    "return a dict with the same parts as the one you were given: {parts}.":
        "hãy trả về một dict có đúng các phần như dict bạn nhận được: {parts}.",
    "activations are not divided: each process runs its own micro-batch and keeps its own activations, as many as "
    "one process alone.":
        "giá trị kích hoạt không bị chia: mỗi tiến trình chạy lô nhỏ (micro-batch) của riêng nó và giữ giá trị kích "
        "hoạt của riêng nó, nhiều bằng một tiến trình chạy một mình.",
    "quant_constants: bitsandbytes keeps the block scales in a QuantState beside the weight, not in a parameter; "
    "FSDP splits only parameters, so every process holds all of them.":
        "quant_constants: bitsandbytes giữ hệ số tỉ lệ của các khối trong một QuantState đặt cạnh trọng số, không "
        "phải trong một tham số; FSDP chỉ chia các tham số, nên tiến trình nào cũng giữ toàn bộ chúng.",
    "{part} is as one process holds it: that is data parallelism (DDP), where every process keeps everything. FSDP "
    "gives each process 1/N of it.":
        "{part} vẫn y như khi một tiến trình giữ nó: đó là song song dữ liệu (DDP), nơi tiến trình nào cũng giữ mọi "
        "thứ. FSDP cho mỗi tiến trình 1/N của nó.",
    "{part} over {n} processes: you returned {got:,} bytes; FSDP gives each process 1/N of it.":
        "{part} chia cho {n} tiến trình: bạn trả về {got:,} byte; FSDP cho mỗi tiến trình 1/N của nó.",
    "FSDP divides the weights, LoRA weights, gradients and optimizer state; each process still keeps its own "
    "activations, and with bitsandbytes all the block scales.":
        "FSDP chia trọng số, trọng số LoRA, gradient và trạng thái bộ tối ưu; mỗi tiến trình vẫn giữ giá trị kích hoạt "
        "của riêng nó, và với bitsandbytes thì giữ toàn bộ hệ số tỉ lệ của các khối.",
    "dequantize_shard's result": "kết quả của dequantize_shard",
    "a shard of {n} blocks dequantizes to ({n}, 64), got {shape}.":
        "một mảnh gồm {n} khối được giải lượng tử hóa thành ({n}, 64), nhưng bạn trả về {shape}.",
    "these are the first process's values: use the codes and scales you were given, which are this process's own "
    "blocks.":
        "đây là các giá trị của tiến trình đầu tiên: hãy dùng các mã và hệ số tỉ lệ bạn nhận được, đó là những khối "
        "của chính tiến trình này.",
    "those are the code values in [-1, 1]: multiply each block by its scale, absmax[block].":
        "đó là giá trị của các mã trong [-1, 1]: hãy nhân mỗi khối với hệ số tỉ lệ của nó, absmax[block].",
    "the two codes of each byte are swapped: the first code is in the high nibble (byte >> 4), the second in the "
    "low one (byte & 15).":
        "hai mã trong mỗi byte bị đổi chỗ: mã thứ nhất nằm ở nửa cao (byte >> 4), mã thứ hai ở nửa thấp (byte & 15).",
    "process {rank}'s blocks differ from the same blocks of the whole dequantized weight by up to {diff:.2e}.":
        "các khối của tiến trình {rank} lệch tới {diff:.2e} so với cùng những khối đó trong toàn bộ trọng số đã giải "
        "lượng tử hóa.",
    "each process can dequantize its own blocks without the others: its codes and their scales travel together. "
    "FSDP still gathers whole layers for the matmul, but nothing is ever cut in half.":
        "mỗi tiến trình tự giải lượng tử hóa được các khối của mình mà không cần các tiến trình khác: mã và hệ số tỉ "
        "lệ của chúng luôn đi cùng nhau. FSDP vẫn gom cả lớp lại cho phép nhân ma trận, nhưng không có gì bị cắt làm "
        "đôi.",
}
